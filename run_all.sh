#!/usr/bin/env bash
# Run the whole study: every numbered notebook in order, executed by papermill with one profile and seed.
#
#   bash run_all.sh [--profile smoke|cpu|paper] [--seed N] [--tasks "pneumonia melanoma_balanced"] [--from NN] [--to NN] [--only NN] [--extra]
#   bash run_all.sh --extra --from 08     the extra evidence (08 source-shift test, 09 variance), after the default run
#
# Environment: DATA_ROOT (default ../shared/data beside the checkout), DC_RESULTS_DIR (default results/),
# DC_RUNS_DIR (checkpoints and score caches, default runs/), SD_WEIGHTS (Stable Diffusion folder, notebook 07),
# DC_NO_BF16=1 (every 'auto' precision runs in fp32, as on a CPU without bf16 support).
# Outputs: results/notebooks/*.ipynb (executed), results/figures/*.png, results/tables/*.csv,
# results/provenance.json and results/SUMMARY.md. Stops at the first failing notebook, naming it and the cell.
set -euo pipefail
cd "$(dirname "$0")"
PROFILE=cpu SEED=0 TASKS="pneumonia melanoma_balanced" FROM=00 TO=99 ONLY="" EXTRA=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --tasks) TASKS=$2; shift 2 ;;
    --from) FROM=$2; shift 2 ;;
    --to) TO=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --extra) EXTRA=1; shift ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/python ] || bash tools/setup_env.sh
# DC_STATIC_VIEWS: the explorer cells (04, 06) render one static view, so executed notebooks stay deterministic
export PATH="$PWD/.venv/bin:$PATH" PYTHONUNBUFFERED=1 MPLBACKEND=module://matplotlib_inline.backend_inline DC_STATIC_VIEWS=1
export DATA_ROOT=${DATA_ROOT:-$(cd .. && pwd)/shared/data}
RESULTS=${DC_RESULTS_DIR:-$PWD/results}
mkdir -p "$RESULTS/notebooks"
task_list=$(printf '"%s",' $TASKS); task_list="[${task_list%,}]"
PARAMS="{profile: $PROFILE, seed: $SEED, tasks: $task_list, data_root: \"$DATA_ROOT\"}"
KEEP=""; if [ "$FROM" != 00 ] || [ "$TO" != 99 ] || [ -n "$ONLY" ] || [ "$EXTRA" = 1 ]; then KEEP=--keep; fi
python -m diffusion_classifier.report.provenance start --profile "$PROFILE" --seed "$SEED" --tasks "$TASKS" --data-root "$DATA_ROOT" $KEEP
echo "profile=$PROFILE seed=$SEED tasks=[$TASKS] data=$DATA_ROOT results=$RESULTS"
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  name=$(basename "$nb" .ipynb); num=${name:0:2}
  if [ -n "$ONLY" ] && [ "$num" != "$ONLY" ]; then continue; fi
  if [[ "$num" < "$FROM" ]] || [[ "$num" > "$TO" ]]; then continue; fi
  if [ -z "$ONLY" ] && [ "$EXTRA" = 0 ] && [[ ! "$num" < "08" ]]; then continue; fi
  echo "=== $name"
  start=$EPOCHREALTIME
  start_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  start_dirty=$(python -c 'from diffusion_classifier.report.provenance import git_commit; print(int(git_commit()["dirty"]))')
  params=$PARAMS  # the Stable Diffusion weights only for the notebook that uses them
  if [ "$num" = 07 ]; then params="${PARAMS%\}}, sd_weights: \"${SD_WEIGHTS:-}\"}"; fi
  if ! papermill "$nb" "$RESULTS/notebooks/$name.ipynb" -y "$params" --cwd notebooks --log-output --no-progress-bar \
       > "$RESULTS/notebooks/$name.log" 2>&1; then
    cell=$(grep -o "Exception encountered at \"In \[[0-9]*\]\"" "$RESULTS/notebooks/$name.log" | tail -1 || true)
    echo "FAILED: notebook $nb ${cell:-} -- executed copy: $RESULTS/notebooks/$name.ipynb" >&2
    tail -n 25 "$RESULTS/notebooks/$name.log" >&2
    exit 1
  fi
  python -m diffusion_classifier.report.provenance notebook "$name" "$start" --commit-at-start "$start_commit" --dirty-at-start "$start_dirty" --parameters "$(python -c 'import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.argv[1])))' "$params")"
  rm -f "$RESULTS/notebooks/$name.log"
done
python -m diffusion_classifier.report.provenance finish
python -m diffusion_classifier.report.summary
echo "done: see $RESULTS/SUMMARY.md"

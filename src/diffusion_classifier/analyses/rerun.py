"""A re-run of the study (another CPU, another precision, another commit) beside the committed results, paired on
the same test images.

Each model of the re-run is compared with the committed model of the same (task, model, rule, N) through their
per-image predictions (predictions.csv): the paired bootstrap of re-run - committed and McNemar on the images where
exactly one of the two is right. Both runs share seed, profile and images (checked), so what differs is the
training (and scoring) arithmetic. One re-run is one look: a re-run's AUC outside the committed AUC's CI shows that
the printed CIs (test images only) do not cover run-to-run movement, and the training-seed spread of notebook 09
says how large that movement usually is; a "significant" paired difference is about these two fitted models, not
about fp32 against bf16.

    python -m diffusion_classifier.analyses.rerun results/reruns/fp32 --name fp32   # -> results/tables/rerun_fp32.csv
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.paths import results_dir
from ..evaluation import paired
from ..evaluation.metrics import metrics_with_ci
from .classification import FULL_RANGE

KEYS = ["task", "model", "rule", "n_draws"]
LEAD = ("auc", "balanced_accuracy")  # the metrics the table leads with


def read_run(folder: Path) -> tuple[pd.DataFrame, dict]:
    """(test predictions, provenance) of a results folder written by run_all.sh."""
    path, prov_path = Path(folder) / "tables" / "predictions.csv", Path(folder) / "provenance.json"
    for f in (path, prov_path):
        if not f.exists():
            raise FileNotFoundError(f"{f}: missing (is {folder} a results folder written by run_all.sh?)")
    d = pd.read_csv(path)
    missing = {*KEYS, "split", "image", "label", "seed", "prediction", "score"} - set(d.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} are missing")
    return d[d.split == "test"], json.loads(prov_path.read_text())


def check_comparable(committed_prov: dict, rerun_prov: dict, committed: pd.DataFrame, rerun: pd.DataFrame):
    """The two runs must share profile and seed, and must not be the same models: a run that reused the committed
    checkpoints and score caches (run folders are keyed by the settings, where precision is 'auto') would compare
    a run with itself."""
    for key in ("profile", "seed"):
        if committed_prov.get(key) != rerun_prov.get(key):
            raise ValueError(f"the runs differ in {key}: {committed_prov.get(key)!r} vs {rerun_prov.get(key)!r}")
    both = committed.merge(rerun, on=[*KEYS, "image"], suffixes=("_c", "_r"))
    if len(both) and np.array_equal(both.score_c.to_numpy(), both.score_r.to_numpy()):
        raise ValueError("every score of the re-run equals the committed one: it reused the committed models")


def compare(committed: pd.DataFrame, rerun: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (task, model, rule, N) in both runs' test predictions: the committed metrics with their CIs, the
    re-run's, and re-run - committed paired on images."""
    rows = []
    for key, c in committed.groupby(KEYS, sort=False):
        r = rerun[(rerun[KEYS] == pd.Series(key, index=KEYS)).all(axis=1)]
        if r.empty:
            continue
        # image = the position in the task's test split, which both runs read in the same order; source and label
        # must agree too
        on = ["image", "source"] if "source" in c.columns and "source" in r.columns else ["image"]
        m = c.merge(r, on=on, suffixes=("_c", "_r"), validate="one_to_one")
        if len(m) != len(c) or len(m) != len(r) or (m.label_c != m.label_r).any():
            raise ValueError(f"{dict(zip(KEYS, key))}: the two runs' test images or labels differ")
        if "seed_c" in m.columns and (m.seed_c != m.seed_r).any():
            raise ValueError(f"{dict(zip(KEYS, key))}: the two runs' seeds differ")
        y = m.label_c.to_numpy()
        mine, theirs = (m.prediction_c, m.score_c), (m.prediction_r, m.score_r)
        ref = metrics_with_ci(y, *mine, n_boot, seed)
        new = metrics_with_ci(y, *theirs, 0, seed)
        row = {**dict(zip(KEYS, key)), "n_images": len(y)}
        for k in LEAD:
            row |= {f"committed_{k}": ref[k], f"committed_{k}_ci_low": ref[f"{k}_ci_low"]}
            row |= {f"committed_{k}_ci_high": ref[f"{k}_ci_high"], f"rerun_{k}": new[k]}
        row |= paired.compare(y, theirs, mine, n_boot, seed)  # a = re-run, b = committed
        row["decisions_changed"] = float(np.mean(m.prediction_c.to_numpy() != m.prediction_r.to_numpy()))
        lo, hi = row["committed_auc_ci_low"], row["committed_auc_ci_high"]
        row["rerun_auc_outside_committed_ci"] = not lo <= row["rerun_auc"] <= hi
        rows.append(row)
    if not rows:
        raise ValueError("the two runs share no (task, model, rule, N) in their test predictions")
    only = committed[KEYS].drop_duplicates().merge(rerun[KEYS].drop_duplicates(), how="left", indicator=True)
    for key in only[only._merge == "left_only"][KEYS].itertuples(index=False):
        print(f"not in the re-run: {dict(zip(KEYS, key))}")
    return pd.DataFrame(rows).rename(
        columns={"only_a_right": "only_rerun_right", "only_b_right": "only_committed_right"}
    )


def verdict(table: pd.DataFrame, name: str, headline: dict) -> list[str]:
    """Sentences on the headline rows (headline: {'rule': ..., 'n_draws': ...} of the diffusion classifier) and
    the baselines, from the comparison table."""
    is_head = ((table.rule == headline["rule"]) & (table.n_draws == headline["n_draws"])) | (table.n_draws == 0)
    out = []
    for row in table[is_head].itertuples(index=False):
        moved = "outside" if row.rerun_auc_outside_committed_ci else "inside"
        significant = not row.auc_diff_ci_low <= 0 <= row.auc_diff_ci_high
        test = "these two models differ significantly" if significant else "no significant paired difference"
        out.append(
            f"{row.task}, {row.model} ({row.rule}, N = {row.n_draws}): the one {name} re-run's test AUC is "
            f"{row.rerun_auc:.3f} against the committed {row.committed_auc:.3f} "
            f"(CI {row.committed_auc_ci_low:.3f}-{row.committed_auc_ci_high:.3f}), {moved} that CI; re-run - committed "
            f"{row.auc_diff:+.3f} (paired CI {row.auc_diff_ci_low:+.3f} to {row.auc_diff_ci_high:+.3f}: {test}); "
            f"{row.decisions_changed:.1%} of decisions changed."
        )
    return out


def check_against_printed(table: pd.DataFrame, classification_csv: Path, tol: float = 5e-4):
    """The committed AUCs and CIs recomputed from predictions.csv must be the ones classification.csv prints, up to
    `tol`: predictions.csv stores scores to 12 significant digits, which merges some of the vote score's tiny
    tie-breaks (measured: at most 3.4e-4 of AUC, vote rows at small N only)."""
    printed = pd.read_csv(classification_csv)
    printed = printed[(printed.source == "all") & (printed.t_range.isna() | (printed.t_range == FULL_RANGE))]
    m = table.merge(printed, on=KEYS)
    if m.empty:
        raise ValueError(f"{classification_csv}: no row matches the comparison's (task, model, rule, N)")
    for mine, theirs in (("committed_auc", "auc"), ("committed_auc_ci_low", "auc_ci_low")):
        gap = float((m[mine] - m[theirs]).abs().max())
        if gap > tol:
            raise ValueError(f"{classification_csv}: {theirs} differs from the recomputed one by {gap:.2g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the re-run's results folder (DC_RESULTS_DIR of that run)")
    ap.add_argument("--name", required=True, help="the re-run's name: the table is results/tables/rerun_<name>.csv")
    args = ap.parse_args()
    (committed, prov), (other, other_prov) = read_run(results_dir()), read_run(args.folder)
    check_comparable(prov, other_prov, committed, other)
    # the committed CIs as classification.csv prints them: the same bootstrap size and seed
    settings = next(iter(prov.get("settings", {}).values()), {})
    n_boot = settings.get("ablation", {}).get("n_bootstrap", 1000)
    table = compare(committed, other, n_boot, prov["seed"])
    check_against_printed(table, results_dir() / "tables" / "classification.csv")
    env = other_prov.get("environment", {})
    table["rerun_commit"] = other_prov.get("git", {}).get("commit", "?")[:12]
    table["rerun_device"] = env.get("device", "?")
    table["rerun_auto_precision"] = env.get("cpu_bf16", {}).get("auto_precision", "?")
    table["rerun_folder"] = str(args.folder)
    out = results_dir() / "tables" / f"rerun_{args.name}.csv"
    table.to_csv(out, index=False)
    print(f"wrote {out} ({len(table)} rows)")


if __name__ == "__main__":
    main()

"""A re-run of the study (another CPU, another precision, another commit) beside the committed results, paired on
the same test images.

Each model of the re-run is compared with the committed model of the same (task, model, rule, N) through their
per-image predictions (predictions.csv): the paired bootstrap of re-run - committed and McNemar on the images where
exactly one of the two is right. Both runs share seed, profile and images, so what differs is the training (and
scoring) arithmetic. When the re-run's AUC falls outside the committed AUC's CI, the printed CIs (test images only)
understate how much a result moves from run to run.

    python -m diffusion_classifier.rerun results/reruns/fp32 --name fp32   # -> results/tables/rerun_fp32.csv
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from . import paired
from .metrics import metrics_with_ci
from .paths import results_dir

KEYS = ["task", "model", "rule", "n_draws"]
LEAD = ("auc", "balanced_accuracy")  # the metrics the table leads with


def read_predictions(folder: Path) -> pd.DataFrame:
    path = Path(folder) / "tables" / "predictions.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no predictions table (is this a results folder written by run_all.sh?)")
    d = pd.read_csv(path)
    missing = {*KEYS, "split", "image", "label", "prediction", "score"} - set(d.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} are missing")
    return d[d.split == "test"]


def compare(committed: pd.DataFrame, rerun: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (task, model, rule, N) in both runs' test predictions: the committed metrics with their CIs, the
    re-run's, and re-run - committed paired on images."""
    rows = []
    for key, c in committed.groupby(KEYS, sort=False):
        r = rerun[(rerun[KEYS] == pd.Series(key, index=KEYS)).all(axis=1)]
        if r.empty:
            continue
        m = c.merge(r, on="image", suffixes=("_c", "_r"), validate="one_to_one")
        if len(m) != len(c) or len(m) != len(r) or (m.label_c != m.label_r).any():
            raise ValueError(f"{dict(zip(KEYS, key))}: the two runs' test images or labels differ")
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
        test = "a significant paired difference" if significant else "not a significant paired difference"
        out.append(
            f"{row.task}, {row.model} ({row.rule}, N = {row.n_draws}): the {name} re-run's test AUC is "
            f"{row.rerun_auc:.3f} against the committed {row.committed_auc:.3f} "
            f"(CI {row.committed_auc_ci_low:.3f}-{row.committed_auc_ci_high:.3f}), {moved} that CI; re-run - committed "
            f"{row.auc_diff:+.3f} (paired CI {row.auc_diff_ci_low:+.3f} to {row.auc_diff_ci_high:+.3f}: {test}); "
            f"{row.decisions_changed:.1%} of decisions changed."
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the re-run's results folder (DC_RESULTS_DIR of that run)")
    ap.add_argument("--name", required=True, help="the re-run's name: the table is results/tables/rerun_<name>.csv")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    table = compare(read_predictions(results_dir()), read_predictions(args.folder), args.n_boot)
    out = results_dir() / "tables" / f"rerun_{args.name}.csv"
    table.to_csv(out, index=False)
    print(f"wrote {out} ({len(table)} rows)")


if __name__ == "__main__":
    main()

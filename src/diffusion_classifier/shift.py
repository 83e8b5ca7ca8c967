"""A shortcut / shift test beyond the paper (notebook 08): generative classifiers are said to avoid shortcut
solutions (Li, Kumar & Pathak, ICLR 2025). On one source's test images, a model trained on that source's training
images only (in-source) is compared with one trained on the other source's only (cross-source). The test images are
the same, so each model family's AUC drop (in - cross) is paired, and so is the difference between the two
families' drops (diffusion - ResNet): all come from the same bootstrap resamples of the test images.
"""
from __future__ import annotations

import numpy as np

from .metrics import binary_metrics


def source_rows(sources: np.ndarray, source: str) -> np.ndarray:
    return np.flatnonzero(np.asarray(sources) == source)


def pick_target(val_auc_by_source: dict) -> str:
    """The target source: the one where the in-distribution model carries most signal on validation (a shift test
    on a source where no model beats chance could not show a drop)."""
    return max(val_auc_by_source, key=val_auc_by_source.get)


def drop_table(y: np.ndarray, scores: dict, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """scores: (family, 'in' | 'cross') -> positive-class score on the same test images. Returns per family the
    AUCs and the drop (in - cross) with paired percentile-bootstrap CIs, and the difference of the drops
    (first family - second family)."""
    y = np.asarray(y)
    families = list(dict.fromkeys(f for f, _ in scores))

    def stats(idx):
        auc = {k: binary_metrics(y[idx], (s[idx] > 0).astype(int), s[idx])["auc"] for k, s in scores.items()}
        drops = {f: auc[f, "in"] - auc[f, "cross"] for f in families}
        return auc, drops, drops[families[0]] - drops[families[-1]]

    auc, drops, gap = stats(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    boot = [stats(rng.integers(0, len(y), len(y))) for _ in range(n_boot)]

    def ci(values):
        return float(np.nanquantile(values, alpha / 2)), float(np.nanquantile(values, 1 - alpha / 2))

    rows = []
    for f in families:
        for arm in ("in", "cross"):
            lo, hi = ci([b[0][f, arm] for b in boot])
            rows.append({"family": f, "trained_on": arm, "measure": "auc", "value": auc[f, arm], "ci_low": lo, "ci_high": hi})
        lo, hi = ci([b[1][f] for b in boot])
        rows.append({"family": f, "trained_on": "in - cross", "measure": "auc_drop", "value": drops[f], "ci_low": lo,
                     "ci_high": hi})
    lo, hi = ci([b[2] for b in boot])
    rows.append({"family": f"{families[0]} - {families[-1]}", "trained_on": "in - cross", "measure": "drop_difference",
                 "value": gap, "ci_low": lo, "ci_high": hi})
    return rows


def verdict(rows, target: str, other: str) -> str:
    """Generated sentence: do the diffusion classifier and the ResNet lose as much when the training source changes?"""
    by = {(r["family"], r["measure"]): r for r in rows}
    parts = []
    for family in ("diffusion-unet", "resnet18"):
        d = by[(family, "auc_drop")]
        parts.append(f"{family} drops {d['value']:+.3f} AUC (95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f})")
    g = by[("diffusion-unet - resnet18", "drop_difference")]
    if g["ci_high"] < 0:
        reading = "the diffusion classifier loses less under the shift: consistent with fewer source shortcuts"
    elif g["ci_low"] > 0:
        reading = "the diffusion classifier loses more under the shift"
    else:
        reading = "the two drops are not distinguishable at this sample size"
    return (f"On the {target} test images, trained on {other} instead of {target}: " + "; ".join(parts)
            + f". Difference of the drops (diffusion − ResNet) {g['value']:+.3f} (95% CI {g['ci_low']:+.3f} to "
            f"{g['ci_high']:+.3f}): {reading}.")

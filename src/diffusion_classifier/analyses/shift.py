"""A shortcut / shift test beyond the paper (notebook 08): generative classifiers are said to avoid shortcut
solutions (Li, Kumar & Pathak, ICLR 2025). For each source, a diffusion classifier and a ResNet-18 are trained on that
source's training images only; each source's test images are then scored by the models of both sources (a 2 x 2
design, so no target source is picked). On one source's test images the in-source model is compared with the
cross-source one: the images are the same, so each family's AUC drop (in - cross) is paired, and so is the
difference between the two families' drops (diffusion - ResNet), all from the same bootstrap resamples.

What a drop measures: the change of training source as a whole — its acquisition style, its case mix (ISIC 2017's
benign class is nevi and seborrhoeic keratoses, ISIC 2018's adds other benign lesions) and its size — not a shortcut
alone; the difference of the two families' drops compares the families under the same change.
"""

from __future__ import annotations

import numpy as np

from ..evaluation.metrics import binary_metrics, bootstrap


def source_rows(sources: np.ndarray, source: str) -> np.ndarray:
    return np.flatnonzero(np.asarray(sources) == source)


def drop_table(y: np.ndarray, scores: dict, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> list:
    """scores: (family, 'in' | 'cross') -> positive-class score on the same test images. Returns per family the
    AUCs and the drop (in - cross) with paired percentile-bootstrap CIs, and the difference of the drops
    (first family - second family)."""
    keys = list(scores)
    families = list(dict.fromkeys(f for f, _ in keys))
    gap_key = f"{families[0]} - {families[-1]}"

    def stats(y, *columns):
        """Every AUC, each family's drop and the difference of the drops, as one flat dict."""
        auc = {k: binary_metrics(y, (s > 0).astype(int), s)["auc"] for k, s in zip(keys, columns)}
        out = {}
        for f in families:  # per family: in, cross, drop (the table's row order)
            out["auc", (f, "in")], out["auc", (f, "cross")] = auc[f, "in"], auc[f, "cross"]
            out["auc_drop", f] = auc[f, "in"] - auc[f, "cross"]
        out["drop_difference", gap_key] = out["auc_drop", families[0]] - out["auc_drop", families[-1]]
        return out

    arrays = (np.asarray(y), *(np.asarray(scores[k]) for k in keys))
    point, ci = stats(*arrays), bootstrap(stats, arrays, n_boot, seed, alpha)
    rows = []
    for (measure, key), value in point.items():
        family, trained_on = key if measure == "auc" else (key, "in - cross")
        rows.append(
            {
                "family": family,
                "trained_on": trained_on,
                "measure": measure,
                "value": value,
                "ci_low": ci[measure, key][0],
                "ci_high": ci[measure, key][1],
            }
        )
    return rows


def verdict(rows, target: str, other: str) -> str:
    """Generated sentence: do the diffusion classifier and the ResNet lose as much when the training source changes?"""
    by = {(r["family"], r["measure"]): r for r in rows}
    parts = []
    for family in ("diffusion-unet", "resnet18"):
        d = by[(family, "auc_drop")]
        parts.append(f"{family} drops {d['value']:+.3f} AUC (95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f})")
    g = by[("diffusion-unet - resnet18", "drop_difference")]
    weak = [
        f
        for f in ("diffusion-unet", "resnet18")
        if any(r["family"] == f and r["trained_on"] == "in" and r["ci_low"] <= 0.5 for r in rows)
    ]
    if weak:
        return (
            f"On the {target} test images, trained on {other} instead of {target}: "
            + "; ".join(parts)
            + f". **Not testable**: the in-source {' and '.join(weak)} AUC CI contains 0.5 (no signal to lose); "
            f"difference of the drops {g['value']:+.3f} (95% CI {g['ci_low']:+.3f} to {g['ci_high']:+.3f})."
        )
    if g["ci_high"] < 0:
        reading = "the diffusion classifier loses less AUC under this change of training source"
    elif g["ci_low"] > 0:
        reading = "the diffusion classifier loses more AUC under this change of training source"
    else:
        reading = "the two drops are not distinguishable (nor shown equal: the CI is wide)"
    return (
        f"On the {target} test images, trained on {other} instead of {target}: "
        + "; ".join(parts)
        + f". Difference of the drops (diffusion − ResNet) {g['value']:+.3f} (95% CI {g['ci_low']:+.3f} to "
        f"{g['ci_high']:+.3f}): {reading}; one training seed per arm, CIs over test images only."
    )

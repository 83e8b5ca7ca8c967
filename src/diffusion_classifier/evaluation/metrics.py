"""Binary classification metrics with percentile-bootstrap 95% CIs over test images (seeded).

Written in plain numpy (checked against scikit-learn in the tests) because the bootstrap calls them
thousands of times per table row and scikit-learn's input validation dominates at that size."""

import numpy as np
from scipy.stats import rankdata

METRICS = ("accuracy", "balanced_accuracy", "auc", "f1", "sensitivity", "specificity")


def binary_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict:
    y, pred, score = np.asarray(y), np.asarray(pred), np.asarray(score, dtype=float)
    pos, neg = y == 1, y == 0
    n_pos, n_neg = pos.sum(), neg.sum()
    tp = (pred[pos] == 1).sum()
    fp = (pred[neg] == 1).sum()
    sens = tp / n_pos if n_pos else np.nan
    spec = 1 - fp / n_neg if n_neg else np.nan
    if n_pos and n_neg:  # Mann-Whitney U with mid-ranks for ties = ROC AUC
        auc = (rankdata(score)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    else:
        auc = np.nan
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": (sens + spec) / 2,
        "auc": auc,
        "f1": 2 * tp / (2 * tp + fp + (n_pos - tp)) if (2 * tp + fp + n_pos - tp) else 0.0,
        "sensitivity": sens,
        "specificity": spec,
    }


def resample_indices(n: int, n_boot: int, seed: int):
    """The bootstrap's resamples of n rows: n_boot index arrays drawn with replacement from one stream seeded by
    seed. Every bootstrap of the package draws here, so equal (n, seed) give equal resamples."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, n)


def bootstrap(fn, arrays, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """Percentile CI of each entry of the dict fn(*arrays) over n_boot resamples of the rows."""
    if n_boot == 0:  # no CIs asked for (the explorer's quick view)
        return {k: (np.nan, np.nan) for k in fn(*arrays)}
    samples = [fn(*[a[idx] for a in arrays]) for idx in resample_indices(len(arrays[0]), n_boot, seed)]
    keys = samples[0].keys()
    return {
        k: (
            float(np.nanquantile([s[k] for s in samples], alpha / 2)),
            float(np.nanquantile([s[k] for s in samples], 1 - alpha / 2)),
        )
        for k in keys
    }


def metrics_with_ci(y, pred, score, n_boot: int = 1000, seed: int = 0) -> dict:
    """Flat dict: each metric plus `<metric>_ci_low` / `<metric>_ci_high`."""
    y, pred, score = map(np.asarray, (y, pred, score))
    point = binary_metrics(y, pred, score)
    ci = bootstrap(binary_metrics, (y, pred, score), n_boot, seed)
    row = {}
    for k in METRICS:
        row[k] = float(point[k])
        row[f"{k}_ci_low"], row[f"{k}_ci_high"] = ci[k]
    return row

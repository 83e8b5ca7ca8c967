"""Paired comparisons of two classifiers on the same images: both see the same bootstrap resamples, so the CI is
of the difference itself (overlapping marginal CIs are not a test), and McNemar's exact test on the images where
exactly one of the two is right.

The verdict vocabulary lives here too, so that every generated verdict (SUMMARY.md, DETAILS.md, the tables'
outcome columns) uses one set of words and one rule:
    superiority      "a beats b": supported when the paired CI of a - b excludes 0 upwards AND McNemar's p < 0.05
                     (where there is a McNemar test), not supported when both show the opposite, otherwise
                     inconclusive; only at the pre-specified look (look 1): a later look is at most
                     "nominal (exploratory, look k)", whichever way it points
    non_inferiority  "a is not worse than b by more than a margin" from the CI of a - b
"""

import numpy as np
from scipy.stats import binomtest

from .metrics import binary_metrics, bootstrap

COMPARED = ("auc", "balanced_accuracy", "accuracy", "f1")
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE = "supported", "not supported", "inconclusive", "not testable"
VOCABULARY = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE, "nominal (exploratory, look k)")
ALPHA = 0.05


def nominal(look: int) -> str:
    return f"nominal (exploratory, look {look})"


def superiority(ci_low: float, ci_high: float, p: float | None = None, look: int = 1) -> str:
    """Verdict on "a beats b" from the paired CI of a - b and McNemar's p (None: no McNemar test for this
    comparison); look 1 is the pre-specified N, later looks are exploratory."""
    significant = p is None or p < ALPHA
    if significant and (ci_low > 0 or ci_high < 0):
        if look != 1:
            return nominal(look)
        return SUPPORTED if ci_low > 0 else NOT_SUPPORTED
    return INCONCLUSIVE


def non_inferiority(ci_low: float, ci_high: float, margin: float) -> str:
    """Verdict on "a is not worse than b by more than margin" (a - b's CI against -margin)."""
    if ci_low > -margin:
        return SUPPORTED
    return NOT_SUPPORTED if ci_high < -margin else INCONCLUSIVE


def bootstrap_difference(y, a: tuple, b: tuple, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """a, b = (predictions, positive-class scores). Per metric in COMPARED: (a - b, ci_low, ci_high) with the
    percentile bootstrap over images, the same resample for both."""

    def differences(y, pred_a, score_a, pred_b, score_b):
        ma, mb = binary_metrics(y, pred_a, score_a), binary_metrics(y, pred_b, score_b)
        return {k: ma[k] - mb[k] for k in COMPARED}

    arrays = tuple(np.asarray(v) for v in (y, *a, *b))
    point = differences(*arrays)
    ci = bootstrap(differences, arrays, n_boot, seed, alpha)
    return {k: (float(point[k]), *ci[k]) for k in COMPARED}


def mcnemar(y, pred_a, pred_b) -> dict:
    """Exact McNemar test: among images where exactly one classifier is right, is either side more frequent
    than chance? Two-sided binomial p-value (1.0 when there is no discordant image)."""
    right_a, right_b = np.asarray(pred_a) == np.asarray(y), np.asarray(pred_b) == np.asarray(y)
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    n = only_a + only_b
    p = binomtest(only_a, n, 0.5).pvalue if n else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "mcnemar_p": float(p)}


def compare(y, a: tuple, b: tuple, n_boot: int = 1000, seed: int = 0) -> dict:
    """Flat row: `<metric>_diff`, `_diff_ci_low`, `_diff_ci_high` for each metric, plus McNemar's counts and p."""
    row = {}
    for k, (d, lo, hi) in bootstrap_difference(y, a, b, n_boot, seed).items():
        row[f"{k}_diff"], row[f"{k}_diff_ci_low"], row[f"{k}_diff_ci_high"] = d, lo, hi
    return {**row, **mcnemar(y, a[0], b[0])}

"""Calibration and selective prediction, as that literature measures them: temperature scaling (`fit_temperature`,
`probabilities`), ECE over bins that never split equal confidences (vote shares take few values; an equal-mass split
of a tie would let the image order decide), Brier score, reliability, error-detection AUROC, risk-coverage curve,
AURC and excess AURC (E-AURC: AURC minus that of a perfect ranking with the same errors, so models of different
accuracy compare), accuracy at coverage and the paper's curve: accuracy after removing the most uncertain 0, 5, ...,
95 %; `selective_metrics` and `with_bootstrap` (95% CIs) gather them.
"""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from .metrics import binary_metrics, bootstrap


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the validation NLL of softmax(logits / T) (Guo et al. 2017)."""

    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean()

    res = minimize_scalar(nll, bounds=(-12, 8), method="bounded")
    return float(np.exp(res.x))


def probabilities(logits, temperature=1.0):
    return softmax(logits / temperature, axis=1)


# ----------------------------------------------------------------------------- metrics


def tie_safe_bins(confidence: np.ndarray, n_bins: int = 10) -> list[np.ndarray]:
    """About equal-mass bins of the predictions (index arrays), whose edges only fall between distinct values: all
    predictions with the same confidence share a bin, whatever their order."""
    values, inverse, counts = np.unique(confidence, return_inverse=True, return_counts=True)
    groups, current, size, remaining = [], [], 0, len(confidence)
    for v, c in enumerate(counts):
        current.append(v)
        size += c
        # close a bin once it holds its share of what is left, so a large tie does not leave singleton bins after it
        if size >= remaining / max(1, n_bins - len(groups)) or v == len(values) - 1:
            groups.append(current)
            remaining -= size
            current, size = [], 0
    return [np.flatnonzero(np.isin(inverse, g)) for g in groups]


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over tie-safe, about equal-mass bins."""
    n = len(confidence)
    return float(
        sum(len(b) / n * abs(correct[b].mean() - confidence[b].mean()) for b in tie_safe_bins(confidence, n_bins))
    )


def brier(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean squared gap between the confidence in the predicted class and whether it was right (the top-label Brier
    score; for two classes it equals the usual Brier score of the class-1 probability)."""
    return float(np.mean((confidence - correct.astype(float)) ** 2))


def reliability(confidence, correct, n_bins=10):
    return [(confidence[b].mean(), correct[b].mean(), len(b)) for b in tie_safe_bins(confidence, n_bins)]


def error_auroc(uncertainty: np.ndarray, correct: np.ndarray) -> float:
    """AUROC of the uncertainty for telling wrong predictions (positives) from right ones."""
    wrong = (~correct.astype(bool)).astype(int)
    return binary_metrics(wrong, wrong, uncertainty)["auc"]


def _tie_averaged(uncertainty, values):
    """values sorted by uncertainty, each replaced by the mean over its tie group: the expectation under a random
    order of tied cases (vote shares tie often; the input order must not decide who is referred first)."""
    order = np.argsort(uncertainty, kind="stable")
    _, group = np.unique(uncertainty[order], return_inverse=True)
    v = values[order].astype(float)
    return (np.bincount(group, v) / np.bincount(group))[group]


def risk_coverage(uncertainty: np.ndarray, correct: np.ndarray):
    """Coverage and selective risk when the most certain predictions are kept first."""
    errors = _tie_averaged(uncertainty, 1 - correct.astype(float))
    k = np.arange(1, len(errors) + 1)
    return k / len(errors), np.cumsum(errors) / k


def aurc(uncertainty, correct) -> float:
    """Area under the risk-coverage curve (mean selective risk over coverages 1/N ... 1): lower is better."""
    return float(risk_coverage(uncertainty, correct)[1].mean())


def excess_aurc(uncertainty, correct) -> float:
    """AURC minus the AURC of the perfect ranking (every error referred first) with the same number of errors."""
    best = np.sort(1 - correct.astype(float))  # errors last when kept most-certain first
    k = np.arange(1, len(best) + 1)
    return aurc(uncertainty, correct) - float((np.cumsum(best) / k).mean())


# the paper's x-axis: 0, 5, ..., 95 % of the predictions removed
REMOVAL_FRACTIONS = tuple(np.arange(0, 1, 0.05))


def accuracy_after_removal(uncertainty, correct, fractions=REMOVAL_FRACTIONS) -> list[tuple]:
    """The paper's curve: (fraction removed, accuracy of the rest) when the most uncertain are removed first."""
    kept = _tie_averaged(uncertainty, correct.astype(float))
    return [(float(f), float(kept[: max(1, int(round((1 - f) * len(kept))))].mean())) for f in fractions]


def accuracy_at_coverage(uncertainty, correct, coverage: float) -> float:
    """Accuracy on the most certain `coverage` share; the rest are referred to a clinician."""
    n = max(1, int(round(coverage * len(correct))))
    return float(_tie_averaged(uncertainty, correct.astype(float))[:n].mean())


def selective_metrics(uncertainty, correct, confidence=None, confidence_cal=None, n_bins=10) -> dict:
    out = {
        "error_auroc": error_auroc(uncertainty, correct),
        "aurc": aurc(uncertainty, correct),
        "e_aurc": excess_aurc(uncertainty, correct),
    }
    for cov in (0.9, 0.8, 0.7):
        out[f"acc_at_{int(cov * 100)}_coverage"] = accuracy_at_coverage(uncertainty, correct, cov)
    out["ece"] = ece(confidence, correct, n_bins) if confidence is not None else np.nan
    out["ece_calibrated"] = ece(confidence_cal, correct, n_bins) if confidence_cal is not None else np.nan
    out["brier"] = brier(confidence, correct) if confidence is not None else np.nan
    out["brier_calibrated"] = brier(confidence_cal, correct) if confidence_cal is not None else np.nan
    return out


def with_bootstrap(uncertainty, correct, confidence=None, confidence_cal=None, n_bins=10, n_boot=500, seed=0):
    """selective_metrics plus 95% percentile-bootstrap CIs (`<metric>_ci_low/high`), from metrics.bootstrap."""
    given = [a for a in (confidence, confidence_cal) if a is not None]

    def metrics_of(u, c, *conf):
        it = iter(conf)
        return selective_metrics(
            u, c, None if confidence is None else next(it), None if confidence_cal is None else next(it), n_bins
        )

    arrays = (np.asarray(uncertainty), np.asarray(correct), *map(np.asarray, given))
    point, ci = metrics_of(*arrays), bootstrap(metrics_of, arrays, n_boot, seed)
    out = dict(point)
    for k in point:
        out[f"{k}_ci_low"], out[f"{k}_ci_high"] = ci[k]
    return out

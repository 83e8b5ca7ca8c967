"""Uncertainty for free, held to the standards of calibration and selective-prediction work.

Scores of the diffusion classifier (pure functions of E[N, C, K]):
    vote_fraction   share of draws voting for the winning class (confidence)
    vote_entropy    entropy of the vote distribution (uncertainty)
    margin_z        (runner-up - best) mean error, divided by the standard error of the per-draw difference
    error_softmax   softmax over -mean error / T, T fitted on val (a probability)
Baseline: max softmax probability and predictive entropy (temperature-scaled on val for the calibrated variant).
Metrics: ECE with equal-mass bins, error-detection AUROC, risk-coverage curve and AURC, accuracy at coverage.
"""
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from . import decision
from .metrics import binary_metrics


# ----------------------------------------------------------------------------- scores

def vote_distribution(E: np.ndarray) -> np.ndarray:
    v = decision.votes(E).astype(float)
    return v / np.maximum(v.sum(1, keepdims=True), 1)


def vote_fraction(E):
    return vote_distribution(E).max(1)


def vote_entropy(E):
    p = vote_distribution(E)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def margin_z(E):
    """Confidence: how many standard errors separate the two best classes' mean errors."""
    m = decision.mean_errors(E)
    order = np.argsort(m, axis=1)
    idx = np.arange(len(E))
    d = E[idx, order[:, 1]] - E[idx, order[:, 0]]  # (N, K) per-draw difference, runner-up - best
    n = np.isfinite(d).sum(1)
    se = np.nanstd(d, axis=1, ddof=1) / np.sqrt(np.maximum(n, 1))
    return np.nanmean(d, axis=1) / np.maximum(se, 1e-12)


def error_logits(E):
    return -decision.mean_errors(E)


def vote_logits(E):
    """Log of smoothed vote shares: the vote's own probability, scalable by a temperature."""
    v = decision.votes(E).astype(float) + 0.5
    return np.log(v / v.sum(1, keepdims=True))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the validation NLL of softmax(logits / T) (Guo et al. 2017)."""
    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean()
    res = minimize_scalar(nll, bounds=(-12, 8), method="bounded")
    return float(np.exp(res.x))


def probabilities(logits, temperature=1.0):
    return softmax(logits / temperature, axis=1)


# ----------------------------------------------------------------------------- metrics

def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error with equal-mass bins (each bin holds ~N/n_bins predictions)."""
    order = np.argsort(confidence, kind="stable")
    bins = np.array_split(order, n_bins)
    n = len(confidence)
    return float(sum(len(b) / n * abs(correct[b].mean() - confidence[b].mean()) for b in bins if len(b)))


def reliability(confidence, correct, n_bins=10):
    order = np.argsort(confidence, kind="stable")
    return [(confidence[b].mean(), correct[b].mean(), len(b)) for b in np.array_split(order, n_bins) if len(b)]


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


def accuracy_at_coverage(uncertainty, correct, coverage: float) -> float:
    """Accuracy on the most certain `coverage` share; the rest are referred to a clinician."""
    n = max(1, int(round(coverage * len(correct))))
    return float(_tie_averaged(uncertainty, correct.astype(float))[:n].mean())


def selective_metrics(uncertainty, correct, confidence=None, confidence_cal=None, n_bins=10) -> dict:
    out = {"error_auroc": error_auroc(uncertainty, correct), "aurc": aurc(uncertainty, correct)}
    for cov in (0.9, 0.8, 0.7):
        out[f"acc_at_{int(cov * 100)}_coverage"] = accuracy_at_coverage(uncertainty, correct, cov)
    out["ece"] = ece(confidence, correct, n_bins) if confidence is not None else np.nan
    out["ece_calibrated"] = ece(confidence_cal, correct, n_bins) if confidence_cal is not None else np.nan
    return out


def with_bootstrap(uncertainty, correct, confidence=None, confidence_cal=None, n_bins=10, n_boot=500, seed=0):
    """selective_metrics plus 95% percentile-bootstrap CIs (`<metric>_ci_low/high`)."""
    point = selective_metrics(uncertainty, correct, confidence, confidence_cal, n_bins)
    rng = np.random.default_rng(seed)
    n = len(correct)
    samples = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        samples.append(selective_metrics(uncertainty[i], correct[i],
                                         None if confidence is None else confidence[i],
                                         None if confidence_cal is None else confidence_cal[i], n_bins))
    out = dict(point)
    for k in point:
        vals = np.array([s[k] for s in samples], dtype=float)
        ok = np.isfinite(vals)
        out[f"{k}_ci_low"] = float(np.quantile(vals[ok], 0.025)) if ok.any() else np.nan
        out[f"{k}_ci_high"] = float(np.quantile(vals[ok], 0.975)) if ok.any() else np.nan
    return out


def evaluate(task, E_val, y_val, E_test, y_test, proba_val, proba_test, n_bins=10, n_boot=500, seed=0):
    """Rows of results/tables/uncertainty.csv for the diffusion classifier (vote rule) and the baseline, plus the
    per-image confidences behind them (for the reliability and risk-coverage figures)."""
    rows, curves = [], {}
    pred = decision.predict_vote(E_test)
    correct = (pred == y_test)
    t_err = fit_temperature(error_logits(E_val), y_val)
    t_vote = fit_temperature(vote_logits(E_val), y_val)
    conf_vote = vote_fraction(E_test)
    cal_vote = probabilities(vote_logits(E_test), t_vote)[np.arange(len(pred)), pred]
    err_p = probabilities(error_logits(E_test), 1.0)[np.arange(len(pred)), pred]
    err_cal = probabilities(error_logits(E_test), t_err)[np.arange(len(pred)), pred]
    diffusion = {
        "vote_fraction": (-conf_vote, conf_vote, cal_vote),
        "vote_entropy": (vote_entropy(E_test), None, None),
        "margin_z": (-margin_z(E_test), None, None),
        "error_softmax": (-err_cal, err_p, err_cal),
    }
    for name, (unc, conf, cal) in diffusion.items():
        rows.append({"task": task, "model": "diffusion-unet", "score": name,
                     **with_bootstrap(unc, correct, conf, cal, n_bins, n_boot, seed)})
        curves[("diffusion-unet", name)] = (unc, correct, conf, cal)
    b_pred = proba_test.argmax(1)
    b_correct = b_pred == y_test
    logits_val, logits_test = np.log(np.clip(proba_val, 1e-12, 1)), np.log(np.clip(proba_test, 1e-12, 1))
    t_b = fit_temperature(logits_val, y_val)
    msp = proba_test.max(1)
    msp_cal = probabilities(logits_test, t_b)[np.arange(len(b_pred)), b_pred]
    ent = -(proba_test * np.log(np.clip(proba_test, 1e-12, 1))).sum(1)
    for name, (unc, conf, cal) in {"max_softmax": (-msp, msp, msp_cal), "predictive_entropy": (ent, None, None)}.items():
        rows.append({"task": task, "model": "resnet18", "score": name,
                     **with_bootstrap(unc, b_correct, conf, cal, n_bins, n_boot, seed)})
        curves[("resnet18", name)] = (unc, b_correct, conf, cal)
    temps = {"error_softmax": t_err, "vote_fraction": t_vote, "max_softmax": t_b}
    return rows, curves, temps


def versus_draws(E, U, y, n_draws_list, n_boot=200, seed=0):
    """How vote-based uncertainty sharpens with K: per K (first K draws), error-detection AUROC of the vote
    share, the mean winning vote share, and accuracy at 80% coverage (with bootstrap CIs)."""
    rows = []
    for k in n_draws_list:
        Ek = decision.restrict(E, U, n_draws=k)
        correct = decision.predict_vote(Ek) == y
        conf = vote_fraction(Ek)
        m = with_bootstrap(-conf, correct, n_boot=n_boot, seed=seed)
        rows.append({"n_draws": k, "accuracy": float(correct.mean()), "mean_vote_fraction": float(conf.mean()),
                     **{key: m[key] for key in m if key.startswith(("error_auroc", "acc_at_80", "aurc"))}})
    return rows

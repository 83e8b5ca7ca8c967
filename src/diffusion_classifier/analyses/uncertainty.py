"""Uncertainty for free, held to the standards of calibration and selective-prediction work.

Scores of the diffusion classifier (pure functions of E[N, C, K]); each belongs to one decision rule and is
judged on that rule's predictions only:
    vote rule   vote_fraction (share of draws voting for the winner: a confidence), vote_entropy (uncertainty)
    mean rule   error_softmax (softmax over -mean error / T, T fitted on val: a probability), margin_z ((runner-up -
                best) mean error over the standard error of the per-draw difference)
Baseline: max softmax probability and predictive entropy (temperature-scaled on val for the calibrated variant).
Metrics: ECE over bins that never split equal confidences (vote shares take few values; an equal-mass split of a
tie would let the image order decide), Brier score, error-detection AUROC, risk-coverage curve, AURC and excess
AURC (E-AURC: AURC minus that of a perfect ranking with the same errors, so models of different accuracy compare),
accuracy at coverage and the paper's curve: accuracy after removing the most uncertain 0, 5, ..., 95 %.
"""

from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from . import decision
from .metrics import binary_metrics, bootstrap

# ----------------------------------------------------------------------------- scores

# The uncertainty scores of each rule, its confidence first. The paper's two rules have their own; a rule added to
# decision.RULES has none until it is given some here. The order is that of uncertainty.csv's rows.
# the columns a reader needs from uncertainty.csv, in notebook 06 and SUMMARY.md
TABLE_COLUMNS = [
    "task",
    "model",
    "rule",
    "score",
    "accuracy_val",
    "accuracy",
    "ece",
    "ece_calibrated",
    "brier_calibrated",
    "error_auroc",
    "aurc",
    "e_aurc",
    "acc_at_80_coverage",
]
RULE_SCORES = {"vote": ("vote_fraction", "vote_entropy"), "mean": ("error_softmax", "margin_z")}


def vote_fraction(E):
    return decision.vote_shares(E).max(1)


def vote_entropy(E):
    p = decision.vote_shares(E)
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


class ScoreCurve(NamedTuple):
    """One score's per-image values on the test images (what the figures and the paired comparisons read)."""

    uncertainty: np.ndarray  # higher = less certain: referred first
    correct: np.ndarray  # whether the score's rule predicted the image right
    confidence: np.ndarray | None  # the confidence in the predicted class, for a score that is one (else None)
    calibrated: np.ndarray | None  # that confidence after temperature scaling on val (else None)


class Evaluation(NamedTuple):
    rows: list  # the rows of uncertainty.csv
    curves: dict  # (model, score) -> ScoreCurve
    temperatures: dict  # score -> temperature fitted on val


def evaluate(
    task, E_val, y_val, E_test, y_test, proba_val, proba_test, n_bins=10, n_boot=500, seed=0, model="diffusion-unet"
) -> Evaluation:
    """Rows of results/tables/uncertainty.csv for the diffusion classifier (each score with its own rule) and the
    baseline, plus the per-image values behind them (for the figures) and the temperatures fitted on val. Each row
    also gives the rule's validation and test accuracy (the ResNet's validation accuracy is optimistic: its epoch was
    chosen on that split)."""
    rows, curves = [], {}
    t_err = fit_temperature(error_logits(E_val), y_val)
    t_vote = fit_temperature(vote_logits(E_val), y_val)
    logits_val, logits_test = np.log(np.clip(proba_val, 1e-12, 1)), np.log(np.clip(proba_test, 1e-12, 1))
    t_b = fit_temperature(logits_val, y_val)

    def confidences(E, rule):
        """(prediction, {score: (uncertainty, raw confidence, calibrated confidence)}) of one rule on E."""
        pred = decision.predict(E, rule)
        at = np.arange(len(pred))
        if rule == "vote":
            conf = vote_fraction(E)
            cal = probabilities(vote_logits(E), t_vote)[at, pred]
            return pred, {"vote_fraction": (-conf, conf, cal), "vote_entropy": (vote_entropy(E), None, None)}
        raw = probabilities(error_logits(E), 1.0)[at, pred]
        cal = probabilities(error_logits(E), t_err)[at, pred]
        return pred, {"error_softmax": (-cal, raw, cal), "margin_z": (-margin_z(E), None, None)}

    def baseline(proba, logits):
        pred = proba.argmax(1)
        msp, msp_cal = proba.max(1), probabilities(logits, t_b)[np.arange(len(pred)), pred]
        ent = -(proba * np.log(np.clip(proba, 1e-12, 1))).sum(1)
        return pred, {"max_softmax": (-msp, msp, msp_cal), "predictive_entropy": (ent, None, None)}

    arms = [(model, rule, confidences(E_test, rule), confidences(E_val, rule)) for rule in RULE_SCORES]
    arms.append(("resnet18", "softmax", baseline(proba_test, logits_test), baseline(proba_val, logits_val)))
    for arm, rule, (pred, scores), (pred_val, _scores_val) in arms:
        correct, correct_val = pred == y_test, pred_val == y_val
        for name, (unc, conf, cal) in scores.items():
            rows.append(
                {
                    "task": task,
                    "model": arm,
                    "rule": rule,
                    "score": name,
                    "accuracy_val": float(correct_val.mean()),
                    "accuracy": float(correct.mean()),
                    **with_bootstrap(unc, correct, conf, cal, n_bins, n_boot, seed),
                }
            )
            curves[(arm, name)] = ScoreCurve(unc, correct, conf, cal)
    temps = {"error_softmax": t_err, "vote_fraction": t_vote, "max_softmax": t_b}
    return Evaluation(rows, curves, temps)


def compare_scores(
    curves: dict,
    task: str,
    a=("diffusion-unet", "vote_fraction"),
    b=("resnet18", "max_softmax"),
    n_boot: int = 500,
    seed: int = 0,
) -> dict:
    """Paired differences a - b on the same test images and resamples: error-detection AUROC, E-AURC and the gain in
    accuracy from referring the 20 % most uncertain (accuracy at 80 % coverage - accuracy)."""

    def measures(ua, ca, ub, cb):
        gain = lambda u, c: accuracy_at_coverage(u, c, 0.8) - c.mean()  # noqa: E731
        return {
            "error_auroc": error_auroc(ua, ca) - error_auroc(ub, cb),
            "e_aurc": excess_aurc(ua, ca) - excess_aurc(ub, cb),
            "referral_gain_at_80": gain(ua, ca) - gain(ub, cb),
        }

    (ua, ca), (ub, cb) = (curves[a].uncertainty, curves[a].correct), (curves[b].uncertainty, curves[b].correct)
    point = measures(ua, ca, ub, cb)
    ci = bootstrap(measures, (ua, ca, ub, cb), n_boot, seed)
    row = {"task": task, "a": " ".join(a), "b": " ".join(b), "n_images": len(ca)}
    for k, v in point.items():
        row[f"{k}_diff"], (row[f"{k}_diff_ci_low"], row[f"{k}_diff_ci_high"]) = float(v), ci[k]
    return row


def removal_table(curves: dict, task: str, scores=(("diffusion-unet", "vote_fraction"), ("resnet18", "max_softmax"))):
    """The paper's uncertainty curve for the given (model, score) pairs as a long table."""
    rows = []
    for key in scores:
        rows += [
            {"task": task, "model": key[0], "score": key[1], "removed": f, "accuracy": acc}
            for f, acc in accuracy_after_removal(curves[key].uncertainty, curves[key].correct)
        ]
    return rows


def versus_draws(E, U, y, n_draws_list, n_boot=200, seed=0):
    """How vote-based uncertainty sharpens with K: per K (first K draws), error-detection AUROC of the vote
    share, the mean winning vote share, and accuracy at 80% coverage (with bootstrap CIs)."""
    rows = []
    for k in n_draws_list:
        Ek = decision.restrict(E, U, n_draws=k)
        correct = decision.predict_vote(Ek) == y
        conf = vote_fraction(Ek)
        m = with_bootstrap(-conf, correct, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "n_draws": k,
                "accuracy": float(correct.mean()),
                "mean_vote_fraction": float(conf.mean()),
                **{key: m[key] for key in m if key.startswith(("error_auroc", "acc_at_80", "aurc"))},
            }
        )
    return rows


def verdict(table, task: str, paired=None) -> str:
    """Claim 4 in one generated paragraph: the vote share against the ResNet's max softmax, read off
    uncertainty.csv and, when given, the paired differences of `compare_scores` (uncertainty_paired.csv)."""
    t = table[table.task == task].set_index(["model", "score"])
    v, b = t.loc[("diffusion-unet", "vote_fraction")], t.loc[("resnet18", "max_softmax")]
    informative = v.error_auroc_ci_low > 0.5
    text = (
        f"**{task}**: the vote share flags the vote's wrong predictions with AUROC {v.error_auroc:.3f} "
        f"(95% CI {v.error_auroc_ci_low:.3f}-{v.error_auroc_ci_high:.3f}) — "
        + (
            "the CI excludes 0.5: the vote-based uncertainty is informative"
            if informative
            else "the CI does not exclude 0.5: on this data the vote-based uncertainty is NOT shown to be informative"
        )
        + f". The ResNet-18's max softmax: {b.error_auroc:.3f} "
        f"({b.error_auroc_ci_low:.3f}-{b.error_auroc_ci_high:.3f}). "
        f"Referring the 20% most uncertain cases: accuracy {v.accuracy:.3f} → {v.acc_at_80_coverage:.3f} "
        f"(ResNet-18 {b.accuracy:.3f} → {b.acc_at_80_coverage:.3f}); E-AURC {v.e_aurc:.3f} vs {b.e_aurc:.3f}."
    )
    if paired is not None and len(paired[paired.task == task]):
        r = paired[paired.task == task].iloc[0]

        def judged(name, d, lo, hi, higher_is_better):
            better = lo > 0 if higher_is_better else hi < 0
            worse = hi < 0 if higher_is_better else lo > 0
            word = "vote share better" if better else "vote share worse" if worse else "not distinguishable"
            return f"{name} {d:+.3g} (95% CI {lo:+.3g} to {hi:+.3g}: {word})"

        text += (
            " Paired on the same images (vote share − max softmax): "
            + "; ".join(
                [
                    judged(
                        "error-detection AUROC",
                        r.error_auroc_diff,
                        r.error_auroc_diff_ci_low,
                        r.error_auroc_diff_ci_high,
                        True,
                    ),
                    judged("E-AURC", r.e_aurc_diff, r.e_aurc_diff_ci_low, r.e_aurc_diff_ci_high, False),
                    judged(
                        "gain from referring 20%",
                        r.referral_gain_at_80_diff,
                        r.referral_gain_at_80_diff_ci_low,
                        r.referral_gain_at_80_diff_ci_high,
                        True,
                    ),
                ]
            )
            + "."
        )
    return text + (
        f" Calibration after temperature scaling (fitted on val): ECE {v.ece_calibrated:.3f} "
        f"({v.ece_calibrated_ci_low:.3f}-{v.ece_calibrated_ci_high:.3f}), Brier {v.brier_calibrated:.3f}; "
        f"ResNet-18 ECE {b.ece_calibrated:.3f} ({b.ece_calibrated_ci_low:.3f}-{b.ece_calibrated_ci_high:.3f}), "
        f"Brier {b.brier_calibrated:.3f} (marginal CIs, not a paired test). Validation → test accuracy: vote "
        f"{v.accuracy_val:.3f} → {v.accuracy:.3f}, ResNet-18 {b.accuracy_val:.3f} → {b.accuracy:.3f} (both fall: "
        f"the test split differs from validation; the ResNet's validation accuracy is also optimistic, its "
        f"epoch having been chosen there)."
    )

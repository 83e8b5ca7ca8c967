"""Notebook 06: uncertainty for free, held to the standards of calibration and selective-prediction work.

`evaluate` gives the rows of uncertainty.csv: each score of the diffusion classifier (`classifier.confidence`) judged
on its own rule's predictions only, beside the baseline's max softmax probability and predictive entropy
(temperature-scaled on val for the calibrated variant), with the metrics of `evaluation.calibration`;
`compare_scores` pairs two scores on the same images, `removal_table` gives the paper's curve, `versus_draws` the
scores' quality against the number of draws, and `verdict` the generated sentence.
"""

from typing import NamedTuple

import numpy as np

from ..classifier import rules
from ..classifier.confidence import RULE_SCORES, error_logits, margin_z, vote_entropy, vote_fraction, vote_logits
from ..evaluation.calibration import (
    accuracy_after_removal,
    accuracy_at_coverage,
    error_auroc,
    excess_aurc,
    fit_temperature,
    probabilities,
    with_bootstrap,
)
from ..evaluation.metrics import bootstrap

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
        pred = rules.predict(E, rule)
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
        Ek = rules.restrict(E, U, n_draws=k)
        correct = rules.predict_vote(Ek) == y
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

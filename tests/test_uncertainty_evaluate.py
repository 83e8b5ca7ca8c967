"""`uncertainty.evaluate` fits its temperatures on validation only, and `uncertainty.verdict`'s sentences follow the
numbers of the table they are given.

Planted data: per image a margin m, and K draws whose error difference (class 0 - class 1) is m plus noise, so the
mean-error logit of class 1 over class 0 is about m. Validation labels are drawn from sigmoid(mean margin / 0.25)
(sharp: a temperature near 0.25 fits them), test labels from sigmoid(mean margin / 4) (nearly coin flips: a
temperature near 4). The ResNet's log-odds are twice the margin, so its temperatures are about 0.5 and 8. A
temperature fitted on test, or on both splits, is far from the validation one, and the calibrated confidences and
calibration metrics on test then differ.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from diffusion_classifier.analyses import uncertainty
from diffusion_classifier.classifier import confidence, rules
from diffusion_classifier.evaluation import calibration

T_VAL, T_TEST, K = 0.25, 4.0, 5


def planted_split(rng, n, temperature):
    m = rng.normal(0, 1.0, n)
    delta = m[:, None] + 0.5 * rng.normal(0, 1, (n, K))  # per-draw error of class 0 - error of class 1
    E = np.stack([1 + 0.5 * delta, 1 - 0.5 * delta], 1)  # (n, 2, K)
    z = delta.mean(1)  # = mean error of class 0 - of class 1: the error logit of class 1 over class 0
    y = (rng.random(n) < expit(z / temperature)).astype(np.int64)
    resnet_logodds = 2 * z
    proba = np.stack([expit(-resnet_logodds), expit(resnet_logodds)], 1)
    return E, y, proba


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(7)
    E_val, y_val, p_val = planted_split(rng, 400, T_VAL)
    E_test, y_test, p_test = planted_split(rng, 300, T_TEST)
    ev = uncertainty.evaluate("pneumonia", E_val, y_val, E_test, y_test, p_val, p_test, 10, 20, 0)
    return (E_val, y_val, p_val, E_test, y_test, p_test), ev


def softmax_rows(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_temperatures_are_fitted_on_validation_and_applied_to_test(planted):
    """Catches: a temperature fitted on test (`fit_temperature(error_logits(E_test), y_test)`, likewise for the vote
    and the ResNet) or on validation and test together; a calibrated confidence left uncalibrated (T = 1) or
    calibrated with another temperature; calibration metrics computed on validation images."""
    (E_val, y_val, p_val, E_test, y_test, p_test), ev = planted
    log_pv, log_pt = np.log(p_val), np.log(p_test)
    fitted_val = {
        "error_softmax": calibration.fit_temperature(confidence.error_logits(E_val), y_val),
        "vote_fraction": calibration.fit_temperature(confidence.vote_logits(E_val), y_val),
        "max_softmax": calibration.fit_temperature(log_pv, y_val),
    }
    fitted_test = {
        "error_softmax": calibration.fit_temperature(confidence.error_logits(E_test), y_test),
        "vote_fraction": calibration.fit_temperature(confidence.vote_logits(E_test), y_test),
        "max_softmax": calibration.fit_temperature(log_pt, y_test),
    }
    # the planted splits need very different temperatures, near the planted ones
    assert fitted_val["error_softmax"] == pytest.approx(T_VAL, rel=0.3)
    assert fitted_test["error_softmax"] == pytest.approx(T_TEST, rel=0.5)
    assert fitted_val["max_softmax"] == pytest.approx(2 * T_VAL, rel=0.3)
    for score in fitted_val:
        assert fitted_test[score] > 4 * fitted_val[score], score
        assert ev.temperatures[score] == fitted_val[score], score

    rows = {(r["model"], r["score"]): r for r in ev.rows}
    checks = {
        ("diffusion-unet", "error_softmax"): (confidence.error_logits(E_test), rules.predict(E_test, "mean")),
        ("diffusion-unet", "vote_fraction"): (confidence.vote_logits(E_test), rules.predict(E_test, "vote")),
        ("resnet18", "max_softmax"): (log_pt, p_test.argmax(1)),
    }
    for (model, score), (logits, pred) in checks.items():
        curve = ev.curves[(model, score)]
        correct = pred == y_test
        np.testing.assert_array_equal(curve.correct, correct)
        at = np.arange(len(pred))
        want = softmax_rows(logits / fitted_val[score])[at, pred]
        np.testing.assert_allclose(curve.calibrated, want, rtol=1e-10, err_msg=score)
        with_test_t = softmax_rows(logits / fitted_test[score])[at, pred]
        # the row's calibrated Brier and ECE are those of the validation temperature, on the test images
        assert rows[(model, score)]["brier_calibrated"] == pytest.approx(np.mean((want - correct) ** 2), abs=1e-12)
        assert rows[(model, score)]["ece_calibrated"] == pytest.approx(calibration.ece(want, correct, 10), abs=1e-12)
        # ... which a test-fitted temperature would flatter: the honest number is the worse one here
        assert np.mean((with_test_t - correct) ** 2) < rows[(model, score)]["brier_calibrated"] - 0.01, score
    # the mean rule's score ranks by its calibrated confidence; the uncalibrated one is kept beside it
    es = ev.curves[("diffusion-unet", "error_softmax")]
    at = np.arange(len(y_test))
    raw = softmax_rows(confidence.error_logits(E_test))[at, rules.predict(E_test, "mean")]
    np.testing.assert_allclose(es.confidence, raw, rtol=1e-10)
    np.testing.assert_allclose(es.uncertainty, -es.calibrated)


def test_validation_and_test_accuracy_come_from_their_own_split(planted):
    """Catches: `accuracy_val` computed on test images (or test accuracy on validation): the planted validation labels
    follow the margin closely, the test labels barely."""
    (E_val, y_val, p_val, E_test, y_test, p_test), ev = planted
    want = {
        "vote": (
            (rules.predict(E_val, "vote") == y_val).mean(),
            (rules.predict(E_test, "vote") == y_test).mean(),
        ),
        "mean": (
            (rules.predict(E_val, "mean") == y_val).mean(),
            (rules.predict(E_test, "mean") == y_test).mean(),
        ),
        "softmax": ((p_val.argmax(1) == y_val).mean(), (p_test.argmax(1) == y_test).mean()),
    }
    assert want["vote"][0] > want["vote"][1] + 0.15  # the planted gap the test relies on
    for r in ev.rows:
        assert (r["accuracy_val"], r["accuracy"]) == pytest.approx(want[r["rule"]]), (r["model"], r["score"])
    assert [(r["model"], r["score"]) for r in ev.rows] == [
        ("diffusion-unet", "vote_fraction"),
        ("diffusion-unet", "vote_entropy"),
        ("diffusion-unet", "error_softmax"),
        ("diffusion-unet", "margin_z"),
        ("resnet18", "max_softmax"),
        ("resnet18", "predictive_entropy"),
    ]


# ----------------------------------------------------------------------------- verdict


def table(vote_ci_low=0.62, **vote):
    """A two-task uncertainty.csv with decoy rows (the vote entropy, the ResNet's entropy, another task) whose
    numbers must never reach the verdict."""
    base = {
        "error_auroc": 0.7,
        "error_auroc_ci_low": 0.62,
        "error_auroc_ci_high": 0.78,
        "accuracy": 0.8,
        "acc_at_80_coverage": 0.85,
        "e_aurc": 0.05,
        "ece_calibrated": 0.04,
        "ece_calibrated_ci_low": 0.02,
        "ece_calibrated_ci_high": 0.06,
        "brier_calibrated": 0.15,
        "accuracy_val": 0.9,
    }
    decoy = {k: 0.111 for k in base}
    resnet = {
        **base,
        "error_auroc": 0.81,
        "error_auroc_ci_low": 0.74,
        "error_auroc_ci_high": 0.88,
        "accuracy": 0.86,
        "acc_at_80_coverage": 0.93,
        "e_aurc": 0.03,
        "ece_calibrated": 0.07,
        "ece_calibrated_ci_low": 0.05,
        "ece_calibrated_ci_high": 0.09,
        "brier_calibrated": 0.12,
        "accuracy_val": 0.95,
    }
    rows = [
        {"task": "pneumonia", "model": "diffusion-unet", "score": "vote_entropy", **decoy},
        {
            "task": "pneumonia",
            "model": "diffusion-unet",
            "score": "vote_fraction",
            **base,
            "error_auroc_ci_low": vote_ci_low,
            **vote,
        },
        {"task": "pneumonia", "model": "resnet18", "score": "predictive_entropy", **decoy},
        {"task": "pneumonia", "model": "resnet18", "score": "max_softmax", **resnet},
        {"task": "other", "model": "diffusion-unet", "score": "vote_fraction", **decoy},
        {"task": "other", "model": "resnet18", "score": "max_softmax", **decoy},
    ]
    return pd.DataFrame(rows)


def paired_table(auroc, e_aurc, gain, task="pneumonia"):
    """Each argument: (difference, ci_low, ci_high)."""
    row = {"task": task}
    for name, (d, lo, hi) in (("error_auroc", auroc), ("e_aurc", e_aurc), ("referral_gain_at_80", gain)):
        row[f"{name}_diff"], row[f"{name}_diff_ci_low"], row[f"{name}_diff_ci_high"] = d, lo, hi
    return pd.DataFrame([row])


def test_verdict_numbers_come_from_the_vote_share_and_max_softmax_rows():
    """Catches: the verdict reading another score's row (the entropy decoys read 0.111) or another task's, or the
    vote's and the ResNet's numbers swapped."""
    text = uncertainty.verdict(table(), "pneumonia")
    assert "0.111" not in text
    for piece in (
        "AUROC 0.700 (95% CI 0.620-0.780)",
        "The ResNet-18's max softmax: 0.810 (0.740-0.880)",
        "accuracy 0.800 → 0.850 (ResNet-18 0.860 → 0.930)",
        "E-AURC 0.050 vs 0.030",
        "ECE 0.040 (0.020-0.060), Brier 0.150",
        "ResNet-18 ECE 0.070 (0.050-0.090), Brier 0.120",
        "(fitted on val)",
        "vote 0.900 → 0.800, ResNet-18 0.950 → 0.860",
    ):
        assert piece in text, piece
    assert "Paired on the same images" not in text  # no paired table given


@pytest.mark.parametrize("ci_low, informative", [(0.62, True), (0.5001, True), (0.5, False), (0.45, False)], ids=str)
def test_verdict_informative_only_when_the_auroc_ci_excludes_one_half(ci_low, informative):
    """Catches: the informativeness branch reading the point estimate (0.7 in every case here) instead of the CI's
    lower end, or `>=` for `>` at the boundary."""
    text = uncertainty.verdict(table(vote_ci_low=ci_low), "pneumonia")
    assert ("the CI excludes 0.5: the vote-based uncertainty is informative" in text) is informative
    assert ("the CI does not exclude 0.5: on this data the vote-based uncertainty is NOT shown" in text) is (
        not informative
    )


@pytest.mark.parametrize(
    "auroc, e_aurc, gain, words",
    [
        # higher AUROC and gain are better; lower E-AURC is better
        (
            (0.1, 0.02, 0.18),
            (-0.02, -0.03, -0.01),
            (0.05, 0.01, 0.09),
            ("vote share better", "vote share better", "vote share better"),
        ),
        (
            (-0.1, -0.18, -0.02),
            (0.02, 0.01, 0.03),
            (-0.05, -0.09, -0.01),
            ("vote share worse", "vote share worse", "vote share worse"),
        ),
        (
            (0.01, -0.05, 0.07),
            (0.0, -0.01, 0.01),
            (0.0, -0.02, 0.02),
            ("not distinguishable", "not distinguishable", "not distinguishable"),
        ),
        # mixed: AUROC better, E-AURC worse (its CI above 0), gain not distinguishable
        (
            (0.1, 0.02, 0.18),
            (0.02, 0.01, 0.03),
            (0.0, -0.02, 0.02),
            ("vote share better", "vote share worse", "not distinguishable"),
        ),
    ],
    ids=["better", "worse", "undecided", "mixed"],
)
def test_verdict_paired_words_follow_the_cis(auroc, e_aurc, gain, words):
    """Catches: E-AURC judged with higher-is-better (it is an error: lower is better), better/worse swapped, a word
    from the point estimate rather than the CI, or the paired row of another task."""
    paired = pd.concat([paired_table(auroc, e_aurc, gain), paired_table((9, 9, 9), (9, 9, 9), (9, 9, 9), "other")])
    text = uncertainty.verdict(table(), "pneumonia", paired)
    fmt = lambda d, lo, hi: f"{d:+.3g} (95% CI {lo:+.3g} to {hi:+.3g}"  # noqa: E731
    for name, values, word in zip(
        ("error-detection AUROC", "E-AURC", "gain from referring 20%"), (auroc, e_aurc, gain), words
    ):
        assert f"{name} {fmt(*values)}: {word})" in text, (name, word)
    assert "+9 " not in text


def test_verdict_without_a_paired_row_for_the_task():
    """A paired table of other tasks only adds no paired sentence."""
    paired = paired_table((0.1, 0.02, 0.18), (0.0, -0.01, 0.01), (0.0, -0.02, 0.02), task="other")
    assert "Paired on the same images" not in uncertainty.verdict(table(), "pneumonia", paired)

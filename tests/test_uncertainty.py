"""Uncertainty and calibration metrics against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from diffusion_classifier.analyses import uncertainty
from diffusion_classifier.classifier import confidence, rules
from diffusion_classifier.evaluation import calibration, metrics


def test_ece_is_zero_for_a_perfectly_calibrated_toy():
    # in each bin the confidence equals the observed accuracy
    conf = np.repeat([0.6, 0.8, 1.0], 10)
    correct = np.concatenate([np.arange(10) < 6, np.arange(10) < 8, np.ones(10, bool)])
    assert calibration.ece(conf, correct, n_bins=3) == pytest.approx(0.0)


def test_ece_of_an_overconfident_model():
    conf = np.full(100, 0.9)
    correct = np.arange(100) % 5 < 3  # 60% right in every bin
    assert calibration.ece(conf, correct, n_bins=5) == pytest.approx(0.3)


def test_aurc_of_a_perfect_ranking_is_the_minimum():
    correct = np.array([1] * 8 + [0] * 2, bool)
    perfect = np.arange(10.0)  # the two errors are the most uncertain
    worst = -perfect
    # the perfect ranking's risk is 0 until coverage 0.8, then 1/9 and 2/10
    assert calibration.aurc(perfect, correct) == pytest.approx((1 / 9 + 2 / 10) / 10)
    assert calibration.aurc(worst, correct) > calibration.aurc(perfect, correct)
    assert calibration.error_auroc(perfect, correct) == 1.0
    assert calibration.accuracy_at_coverage(perfect, correct, 0.8) == 1.0


def test_error_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    correct = rng.random(300) < 0.8
    u = rng.normal(size=300) + (~correct)
    assert calibration.error_auroc(u, correct) == pytest.approx(roc_auc_score(~correct, u))


def test_vote_scores_on_hand_made_tensor():
    E = np.array(
        [
            [[1, 1, 1, 1], [2, 2, 2, 2]],  # unanimous
            [[1, 2, 1, 2], [2, 1, 2, 1]],
        ],
        dtype=float,
    )  # split 2-2
    assert confidence.vote_fraction(E).tolist() == [1.0, 0.5]
    assert confidence.vote_entropy(E)[0] == pytest.approx(0.0)
    assert confidence.vote_entropy(E)[1] == pytest.approx(np.log(2))


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 2))
    y = np.array([rng.choice(2, p=p) for p in calibration.probabilities(logits, 2.5)])
    assert calibration.fit_temperature(logits, y) == pytest.approx(2.5, rel=0.15)


def test_ties_do_not_depend_on_input_order():
    u = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([0, 0, 1, 1, 1], bool)  # same tie group content, other order
    assert calibration.aurc(u, a) == pytest.approx(calibration.aurc(u, b))
    assert calibration.accuracy_at_coverage(u, a, 0.4) == pytest.approx(0.5)


def test_ece_does_not_depend_on_the_order_of_tied_confidences():
    """Vote shares take few values: an equal-mass split inside a tie would let the image order set the ECE."""
    conf = np.array([0.6] * 6 + [0.9] * 4)
    a = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0], bool)
    b = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0], bool)  # the same outcomes within each tie, in another order
    assert calibration.ece(conf, a, n_bins=5) == pytest.approx(calibration.ece(conf, b, n_bins=5))
    assert calibration.ece(conf, a, n_bins=5) == pytest.approx(0.6 * 0.1 + 0.4 * 0.15)
    assert all(len(set(conf[bin_])) == 1 for bin_ in calibration.tie_safe_bins(conf, 5))


def test_a_large_tie_leaves_no_singleton_bins_after_it():
    conf = np.concatenate([np.full(50, 0.55), np.linspace(0.6, 1.0, 50)])
    bins = calibration.tie_safe_bins(conf, 10)
    sizes = [len(b) for b in bins]
    assert len(bins) <= 10 and sizes[0] == 50 and min(sizes[1:]) >= 2 and sum(sizes) == 100


def test_brier_and_excess_aurc_hand_computed():
    conf = np.array([1.0, 0.5, 0.8])
    correct = np.array([1, 0, 1], bool)
    assert calibration.brier(conf, correct) == pytest.approx((0 + 0.25 + 0.04) / 3)
    perfect = np.array([0.0, 2.0, 1.0])  # the error is the most uncertain
    assert calibration.excess_aurc(perfect, correct) == pytest.approx(0.0)
    assert calibration.excess_aurc(-perfect, correct) > 0


def test_accuracy_after_removal_is_the_papers_curve():
    correct = np.array([1] * 8 + [0] * 2, bool)
    u = np.arange(10.0)  # the two errors are the most uncertain
    curve = dict(calibration.accuracy_after_removal(u, correct, fractions=(0.0, 0.2, 0.5)))
    assert curve == {0.0: 0.8, 0.2: 1.0, 0.5: 1.0}


def test_each_score_is_judged_on_its_own_rule():
    """error_softmax and margin_z rank the mean rule's predictions, the vote scores the vote's: a tensor where the
    two rules disagree shows each row's accuracy is its own rule's."""
    E = np.array([[[0.1, 0.1, 5.0], [0.2, 0.2, 0.1]]] * 4 + [[[0.2, 0.2, 0.2], [0.1, 0.1, 0.1]]] * 4)
    y = np.array([0] * 4 + [1] * 4)  # the vote gets all right; the mean rule misses the first four
    proba = np.tile([[0.3, 0.7]], (8, 1))
    ev = uncertainty.evaluate("toy", E, y, E, y, proba, proba, n_bins=2, n_boot=10)
    acc = {r["score"]: r["accuracy"] for r in ev.rows}
    assert acc["vote_fraction"] == 1.0 and acc["vote_entropy"] == 1.0
    assert acc["error_softmax"] == 0.5 and acc["margin_z"] == 0.5
    assert [(r["rule"], r["score"]) for r in ev.rows][:4] == [
        (k, s) for k, v in confidence.RULE_SCORES.items() for s in v
    ]
    vote = ev.curves["diffusion-unet", "vote_fraction"]
    assert vote.correct.all() and np.array_equal(vote.confidence, -vote.uncertainty)
    assert ev.curves["diffusion-unet", "margin_z"].confidence is None
    assert set(ev.temperatures) == {"error_softmax", "vote_fraction", "max_softmax"}


def test_paired_comparison_of_two_uncertainty_scores():
    rng = np.random.default_rng(1)
    correct = rng.random(400) < 0.8
    good = rng.normal(size=400) + 2 * (~correct)  # ranks errors well
    bad = rng.normal(size=400)  # ranks at random
    curves = {
        ("a", "s"): uncertainty.ScoreCurve(good, correct, None, None),
        ("b", "s"): uncertainty.ScoreCurve(bad, correct, None, None),
    }
    row = uncertainty.compare_scores(curves, "toy", ("a", "s"), ("b", "s"), n_boot=200)
    assert row["error_auroc_diff_ci_low"] > 0.2 and row["e_aurc_diff_ci_high"] < 0
    assert row["referral_gain_at_80_diff_ci_low"] > 0


def test_one_bootstrap_and_one_vote_share():
    """with_bootstrap resamples the images exactly as metrics.bootstrap does (metrics.resample_indices), and the vote
    scores read the vote shares of rules.vote_shares."""
    rng = np.random.default_rng(0)
    correct = rng.random(80) < 0.7
    u = rng.normal(size=80) + (~correct)
    ci = calibration.with_bootstrap(u, correct, n_boot=50, seed=3)
    same = metrics.bootstrap(lambda u, c: {"error_auroc": calibration.error_auroc(u, c)}, (u, correct), 50, 3)
    assert (ci["error_auroc_ci_low"], ci["error_auroc_ci_high"]) == same["error_auroc"]
    stream = np.random.default_rng(3)
    assert all(np.array_equal(i, stream.integers(0, 80, 80)) for i in metrics.resample_indices(80, 5, 3))
    E = np.array([[[0.1, 0.1, 0.9, np.nan], [0.2, 0.2, 0.1, np.nan]]])  # 2 of 3 voting draws for class 0
    assert rules.vote_shares(E).tolist() == [[2 / 3, 1 / 3]]
    assert confidence.vote_fraction(E).tolist() == [2 / 3]


def _one_vote_split(y, right, gap=1.0):
    """(N, 2, 4) errors where every image's vote is 3-1 and its mean errors differ by the same amount, for the class
    y (right) or the other one (wrong): every image then has the same logits, so a temperature fitted on a split sets
    the calibrated confidence to that split's accuracy exactly (NLL of one repeated logit pair)."""
    E = np.empty((len(y), 2, 4))
    for i, (label, ok) in enumerate(zip(y, right)):
        win = label if ok else 1 - label
        E[i, win] = [1.0, 1.0, 1.0, 1.0 + gap]  # wins draws 0-2
        E[i, 1 - win] = [1.0 + gap, 1.0 + gap, 1.0 + gap, 1.0 + gap / 2]  # wins draw 3
    return E


def test_temperatures_come_from_validation_and_set_the_calibrated_columns():
    """Validation and test differ (5 of 8 right on val, 4 of 8 on test) and every image has the same logits, so the
    values are hand-derived: temperature scaling on val makes every calibrated confidence 5/8, hence on test
    ECE_cal = |1/2 - 5/8| = 0.125 and Brier_cal = (3/8)^2 / 2 + (5/8)^2 / 2 = 0.265625, against the raw vote share
    3/4 (ECE 0.25, Brier 0.3125) and the ResNet's raw 0.8 (ECE 0.3, Brier 0.34). Catches: temperatures fitted on the
    test split (the calibrated confidence would be 1/2: ECE 0, Brier 0.25), calibrated columns that read the raw
    confidence, and the old test's val == test, where neither would show."""
    y = np.array([0, 1] * 4)
    val_right, test_right = np.arange(8) < 5, np.arange(8) % 4 < 2
    E_val, E_test = _one_vote_split(y, val_right), _one_vote_split(y, test_right)

    def proba(right):
        pred = np.where(right, y, 1 - y)
        return np.where(np.arange(2) == pred[:, None], 0.8, 0.2)

    ev = uncertainty.evaluate("toy", E_val, y, E_test, y, proba(val_right), proba(test_right), n_bins=4, n_boot=10)
    rows = {r["score"]: r for r in ev.rows}
    for score, raw_ece, raw_brier in (
        ("vote_fraction", 0.25, 0.3125),
        ("error_softmax", None, None),
        ("max_softmax", 0.3, 0.34),
    ):
        r = rows[score]
        assert (r["accuracy_val"], r["accuracy"]) == (5 / 8, 1 / 2), score
        assert r["ece_calibrated"] == pytest.approx(0.125, abs=1e-4), score
        assert r["brier_calibrated"] == pytest.approx(0.265625, abs=1e-4), score
        np.testing.assert_allclose(
            ev.curves["diffusion-unet" if score != "max_softmax" else "resnet18", score].calibrated, 5 / 8, atol=1e-4
        )
        if raw_ece is not None:
            assert (r["ece"], r["brier"]) == (pytest.approx(raw_ece), pytest.approx(raw_brier)), score
    for score in ("vote_entropy", "margin_z", "predictive_entropy"):  # not confidences: no calibration columns
        assert all(np.isnan(rows[score][k]) for k in ("ece", "ece_calibrated", "brier", "brier_calibrated"))
    # the temperatures are validation's, which test's would not be
    assert ev.temperatures["vote_fraction"] == pytest.approx(
        calibration.fit_temperature(confidence.vote_logits(E_val), y)
    )
    assert ev.temperatures["vote_fraction"] != pytest.approx(
        calibration.fit_temperature(confidence.vote_logits(E_test), y), rel=0.1
    )


def test_margin_z_hand_computed():
    """margin_z = mean / standard error of the per-draw difference runner-up - best, over the draws an image has.
    Image 0: differences (1, 1, 1, -0.5): mean 0.625, sd 0.75, se 0.375, z = 5/3. Image 1 (three classes, the third
    the runner-up by mean, one draw missing): differences (2, 1, 3), mean 2, sd 1, se 1/sqrt(3), z = 2 sqrt(3).
    Catches: a z with the population sd (ddof 0), without the standard error, over the wrong pair of classes, or
    counting the missing draw."""
    E = np.array(
        [
            [[1.0, 1.0, 1.0, 1.5], [2.0, 2.0, 2.0, 1.0], [9.0, 9.0, 9.0, 9.0]],
            [[1.0, 1.0, 1.0, np.nan], [5.0, 5.0, 5.0, np.nan], [3.0, 2.0, 4.0, np.nan]],
        ]
    )
    np.testing.assert_allclose(confidence.margin_z(E), [5 / 3, 2 * np.sqrt(3)], rtol=1e-12)

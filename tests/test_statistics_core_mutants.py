"""Tests that kill the mutants mutmut left alive in the statistics core (docs/mutation.md).

Each test's docstring names the mutants it kills, as `module:function #n` (mutmut's numbering; `mutmut show
diffusion_classifier.<module>.x_<function>__mutmut_<n>` prints the mutation). Expected values are derived by hand
on planted cases; where a value is the composition of two tested functions, the test computes it from them."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from diffusion_classifier.analyses import early_stopping
from diffusion_classifier.classifier import rules
from diffusion_classifier.evaluation import calibration as unc
from diffusion_classifier.evaluation import paired
from diffusion_classifier.evaluation.metrics import binary_metrics, bootstrap, metrics_with_ci, resample_indices


def planted(*rows):
    """Two-class error tensor (N, 2, K): row i's character k is the class that draw k of image i votes for (error
    0.2 for it, 0.8 for the other)."""
    v = np.array([[int(c) for c in r] for r in rows])
    return np.where(np.stack([v == 0, v == 1], 1), 0.2, 0.8)


# ----------------------------------------------------------------------------- decision


def test_restrict_keeps_the_half_open_time_range_and_the_first_draws():
    """decision:restrict #2 (t_max default 2.0), #5 (U > t_min), #6 (U <= t_max), #8 (`keep =` drops the time
    range when n_draws is given)."""
    E = np.ones((1, 2, 4))
    U = np.array([[0.25, 0.5, 0.75, 1.0]])
    kept = lambda *a, **k: np.isfinite(rules.restrict(E, U, *a, **k)[0, 0]).tolist()
    assert kept() == [True, True, True, False]  # [0, 1) by default: a time of exactly 1 is outside
    assert kept(0.5, 0.75) == [False, True, False, False]  # t_min is in, t_max is out
    assert kept(0.5, 1.0, n_draws=2) == [False, True, False, False]  # both conditions, not the draw cut alone


def test_mean_errors_hand_values_with_missing_draws():
    """decision:mean_errors #2 (count over the whole tensor), #25 (n >= 0: a never-evaluated class gets 0, not
    inf), #27 (sum times count), #32 (divides a single draw by 2)."""
    nan = np.nan
    E = np.array([[[0.2, 0.4, nan], [0.3, nan, nan]], [[nan, nan, nan], [0.5, 0.7, 0.9]]])
    np.testing.assert_allclose(rules.mean_errors(E), [[0.3, 0.3], [np.inf, 0.7]])


def test_vote_shares_of_a_single_voting_draw():
    """decision:vote_shares #14 (divides by at least 2 votes): one voting draw gives a share of 1."""
    E = np.array([[[0.2], [0.8]], [[np.nan], [np.nan]]])
    assert rules.vote_shares(E).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_unknown_rule_names_the_registered_rules():
    """decision:check_rule #2 (message None), #4 (separator mangled)."""
    message = f"rule must be one of {', '.join(rules.RULES)}, got 'median'"
    with pytest.raises(ValueError, match=re.escape(message)):
        rules.predict(np.ones((1, 2, 1)), "median")


def test_a_single_class_is_decided_at_once():
    """decision:_leader_and_runner_up #8, #14 (runner-up of one class), #16, #17 (leader index out of range);
    vote_flip_probability #4, #6; _decided #4-#7 (None shape, float dtype): with one class the vote is decided
    (a bool array), the flip probability is 0 and the replay keeps the first round only."""
    E = np.full((3, 1, 5), 0.5)
    decided = rules.vote_decided(E, 3)
    assert decided.dtype == bool and decided.tolist() == [True, True, True]
    assert rules.vote_flip_probability(E, 3).tolist() == [0.0, 0.0, 0.0]
    assert np.isfinite(rules.replay_early_stop(E, 2)).sum((1, 2)).tolist() == [2, 2, 2]


def test_three_classes_leader_is_the_most_voted():
    """decision:_leader_and_runner_up #9 (v[:, +1] as the leader: the middle class of three)."""
    E = np.stack([np.where(np.arange(3) == c, 0.2, 0.8) for c in [0, 0, 0, 0, 0, 1]], 1)[None]
    assert rules.votes(E).tolist() == [[5, 1, 0]]
    assert rules.vote_decided(E, 3).tolist() == [True]  # 5 - 1 > 3 draws left


def test_no_draws_left():
    """decision:_flip_probability #1 (remaining < 0: a tie with no draws left gets probability 1); _decided #11
    (alpha >= 0: exact stopping would call a tie decided because its flip probability is 0). With no draws left
    nothing can change (probability 0), and the exact rule needs a margin above the draws left (0), which a tie
    lacks."""
    tie, lead = planted("0011"), planted("0001")
    assert rules.vote_flip_probability(tie, 0).tolist() == [0.0]
    assert rules.vote_decided(tie, 0, alpha=0.0).tolist() == [False]
    assert rules.vote_decided(lead, 0, alpha=0.0).tolist() == [True]


def test_sequential_stop_at_a_flip_probability_equal_to_alpha():
    """decision:_decided #21 (flip < alpha): a flip probability equal to alpha stops (<= alpha)."""
    E = planted("000000")
    p = float(rules.vote_flip_probability(E, 14)[0])
    assert 0 < p < 0.01  # 6-0 with 14 left: not exact (6 <= 14), and the flip chance is small
    assert rules.vote_decided(E, 14, alpha=p).tolist() == [True]


def test_round_ends_hand_values():
    """decision:round_ends #8 (step 1 instead of round_size)."""
    assert rules.round_ends(10, 4) == [4, 8, 10]
    assert rules.round_ends(8, 4) == [4, 8]


# ----------------------------------------------------------------------------- paired and metrics


def paired_case():
    """40 images, two classifiers with continuous scores (so that resamples move every metric)."""
    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    score_a, score_b = y + rng.normal(0, 0.8, 40), y + rng.normal(0, 1.2, 40)
    return y, ((score_a > 0.5).astype(int), score_a), ((score_b > 0.5).astype(int), score_b)


def test_paired_defaults_are_1000_resamples_at_seed_0_and_alpha_5_percent():
    """paired:bootstrap_difference #1, #2, #3 (defaults), #26 (seed None); compare #1, #2 (defaults), #8 (seed
    None), #13 (seed not passed on)."""
    y, a, b = paired_case()
    assert paired.bootstrap_difference(y, a, b) == paired.bootstrap_difference(y, a, b, 1000, 0, 0.05)
    assert paired.bootstrap_difference(y, a, b, 1000, 1) != paired.bootstrap_difference(y, a, b, 1000, 0)
    assert paired.bootstrap_difference(y, a, b, 1001, 0) != paired.bootstrap_difference(y, a, b, 1000, 0)
    assert paired.compare(y, a, b) == paired.compare(y, a, b, 1000, 0)
    at_5 = paired.compare(y, a, b, 300, 5)
    assert at_5 != paired.compare(y, a, b, 300, 0)
    for k, (d, lo, hi) in paired.bootstrap_difference(y, a, b, 300, 5).items():
        assert (at_5[f"{k}_diff"], at_5[f"{k}_diff_ci_low"], at_5[f"{k}_diff_ci_high"]) == (d, lo, hi)


def test_paired_ci_is_the_percentile_interval_of_the_accuracy_difference():
    """paired:bootstrap_difference #32 (alpha not passed on): at alpha = 0.5 the CI is the quartiles of the
    accuracy difference over the shared resamples."""
    y, a, b = paired_case()
    right_a, right_b = (a[0] == y).astype(float), (b[0] == y).astype(float)
    diffs = [right_a[i].mean() - right_b[i].mean() for i in resample_indices(40, 200, 3)]
    _, lo, hi = paired.bootstrap_difference(y, a, b, 200, 3, alpha=0.5)["accuracy"]
    assert (lo, hi) == pytest.approx((np.quantile(diffs, 0.25), np.quantile(diffs, 0.75)))
    assert hi - lo < np.quantile(diffs, 0.975) - np.quantile(diffs, 0.025)


def test_compare_counts_mcnemar_on_the_predictions_of_both():
    """paired:compare #17 (b's predictions None), #22 (b's scores taken as its predictions)."""
    y = np.array([1, 1, 1, 0, 0, 0])
    a = (np.array([1, 1, 0, 0, 1, 1]), np.array([0.9, 0.8, 0.4, 0.3, 0.7, 0.6]))
    b = (np.array([1, 0, 1, 0, 0, 1]), np.array([0.7, 0.45, 0.55, 0.2, 0.1, 0.8]))
    row = paired.compare(y, a, b, n_boot=0)
    # a right on 0, 1, 3; b right on 0, 2, 3, 4: only a on 1, only b on 2 and 4
    assert (row["only_a_right"], row["only_b_right"]) == (1, 2)
    assert row["mcnemar_p"] == pytest.approx(1.0)  # two-sided binomial, 1 of 3


def test_verdicts_at_their_boundaries():
    """paired:superiority #1 (default look 2), #5 (p <= 0.05 significant), #8, #10 (a CI ending at 0 taken as
    excluding it); non_inferiority #1, #5 (a CI ending at -margin taken as clearing it, or as below it). A
    boundary value is not beyond it: p = 0.05 is not significant and a CI that reaches 0 (or -margin) does not
    exclude it."""
    assert paired.superiority(0.01, 0.05, 0.01) == paired.SUPPORTED  # look 1 by default
    assert paired.superiority(0.01, 0.05, 0.05) == paired.INCONCLUSIVE
    assert paired.superiority(0.0, 0.05, 0.01) == paired.INCONCLUSIVE
    assert paired.superiority(-0.05, 0.0, 0.01) == paired.INCONCLUSIVE
    assert paired.non_inferiority(-0.05, 0.01, 0.05) == paired.INCONCLUSIVE
    assert paired.non_inferiority(-0.1, -0.05, 0.05) == paired.INCONCLUSIVE


def test_a_one_class_resample_gives_nan_without_warnings():
    """metrics:binary_metrics #22, #26 (0/0 for sensitivity / specificity), #30 (AUC with one class): the
    bootstrap meets one-class resamples; they give NaN quietly, not through a 0/0 division."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pos = binary_metrics([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.6])
        neg = binary_metrics([0, 0, 0], [1, 0, 0], [0.9, 0.2, 0.6])
    assert np.isnan(pos["specificity"]) and np.isnan(pos["auc"]) and pos["sensitivity"] == pytest.approx(2 / 3)
    assert np.isnan(neg["sensitivity"]) and np.isnan(neg["auc"]) and neg["specificity"] == pytest.approx(2 / 3)


def test_f1_hand_values_at_its_edges():
    """metrics:binary_metrics #56, #68, #70 (F1 of a set with no positive and no positive prediction: 0, not NaN or
    1), #66 (tp + fp = n_pos taken as an empty denominator), #67 (fp = tp + n_pos likewise)."""
    assert binary_metrics([0, 0], [0, 0], [0.1, 0.2])["f1"] == 0.0
    assert binary_metrics([1, 0], [1, 0], [0.9, 0.2])["f1"] == 1.0
    assert binary_metrics([1, 0, 0, 0], [1, 1, 1, 0], [0.9, 0.8, 0.7, 0.1])["f1"] == pytest.approx(0.5)  # 2/(2+2)


def test_bootstrap_percentiles_defaults_and_a_single_resample():
    """metrics:bootstrap #1, #2 (defaults), #14 (keys of the second resample: fails for one), #20, #21, #29, #30
    (quantile levels other than alpha/2 and 1 - alpha/2)."""
    x = np.arange(30.0)
    fn = lambda x: {"m": x.mean()}
    means = [x[i].mean() for i in resample_indices(30, 400, 3)]
    lo, hi = bootstrap(fn, (x,), 400, 3)["m"]
    assert (lo, hi) == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)))
    assert bootstrap(fn, (x,)) == bootstrap(fn, (x,), 1000, 0, 0.05)
    assert bootstrap(fn, (x,), 1000, 1) != bootstrap(fn, (x,), 1000, 0)
    assert bootstrap(fn, (x,), 1001, 0) != bootstrap(fn, (x,), 1000, 0)
    (only,) = resample_indices(30, 1, 4)
    assert bootstrap(fn, (x,), 1, 4)["m"] == (x[only].mean(), x[only].mean())


def test_metrics_with_ci_defaults_and_seed():
    """metrics:metrics_with_ci #1, #2 (defaults), #23 (seed not passed on)."""
    y, (pred, score), _ = paired_case()
    assert metrics_with_ci(y, pred, score) == metrics_with_ci(y, pred, score, 1000, 0)
    ci = bootstrap(binary_metrics, (y, pred, score), 50, 7)
    row = metrics_with_ci(y, pred, score, 50, 7)
    assert all((row[f"{k}_ci_low"], row[f"{k}_ci_high"]) == ci[k] for k in ci)
    assert row != metrics_with_ci(y, pred, score, 50, 0)


# ----------------------------------------------------------------------------- early stopping (ablation)


def test_early_stopping_table_hand_row():
    """ablation:early_stopping_table #24-#27, #32-#35, #39, #40, #51, #52 (column names), #54, #58 (error rate
    for accuracy). Three unanimous images, K = 8, rounds of 2: exact stopping stops after 6 draws (6 - 0 > 2 left),
    12 of 16 evaluations; the second image's vote is wrong."""
    E = planted("00000000", "11111111", "11111111")
    row = early_stopping.early_stopping_table(E, np.array([0, 0, 1]), "t", "val", 2, alphas=()).iloc[0].to_dict()
    assert row == {
        "task": "t",
        "split": "val",
        "stopping": "exact",
        "alpha": 0.0,
        "round_size": 2,
        "n_draws": 8,
        "n_images": 3,
        "unet_evals_per_image": 12.0,
        "speedup": pytest.approx(4 / 3),
        "changed_vs_full_vote": 0,
        "vote_accuracy": pytest.approx(2 / 3),
        "full_vote_accuracy": pytest.approx(2 / 3),
    }


def test_changed_tail_bound_hand_values():
    """ablation:changed_tail_bound #1 (allowed > mean: Markov at allowed = mean), #11 (Markov capped at 2)."""
    assert early_stopping.changed_tail_bound(3, 3.0) == pytest.approx(1 - 13 * np.exp(-3))  # Poisson(3): P(X > 3)
    assert early_stopping.changed_tail_bound(0, 2.0) == 1.0  # Markov 2 / 1, capped at 1


def test_alpha_cap_one_image_and_a_bound_equal_to_the_risk():
    """ablation:alpha_cap #2 (refuses one image), #17 (bound < 1 - confidence: equality should qualify)."""
    # one image at 0.5 %: 0 changes allowed; Markov alpha * 1 <= 0.05 for every alpha up to the rate
    assert early_stopping.alpha_cap(1, 0.005) == 0.005
    # two images at 25 %: 0 allowed, alpha = 0.25 gives a mean of 0.5 and Markov 0.5 / 1 = 1 - 0.5 exactly
    assert early_stopping.alpha_cap(2, 0.25, alphas=(0.25,), confidence=0.5) == 0.25


def clear(n):
    """n unanimous images of 20 draws, alternating classes: no stopping rule changes their votes."""
    E = planted(*[str(i % 2) * 20 for i in range(n)])
    return E, np.arange(n) % 2


def test_select_stop_alpha_caps_for_the_run_it_is_told():
    """ablation:select_stop_alpha #12 (n_images ignored): on clear validation images the selected alpha is the cap
    for n_images (8 images: 0.005; 100000: 0.002, `alpha_cap`)."""
    E_val, y_val = clear(8)
    assert early_stopping.select_stop_alpha(E_val, y_val, 5) == 0.005
    assert early_stopping.select_stop_alpha(E_val, y_val, 5, n_images=100_000) == 0.002


def test_select_stop_alpha_accepts_changes_equal_to_the_target():
    """ablation:select_stop_alpha #36 (changed < target), #37 (target rate / n_images). Four images, one of which
    leads 6-0 after the first round of 6 and loses 6-14: alpha 0.05 stops it early (flip chance 0.001) and changes
    exactly one vote, which a 25 % target on 4 images allows."""
    E = planted("00000011111111111111", *[str(i % 2) * 20 for i in range(3)])
    y = np.array([1, 0, 1, 0])
    table = early_stopping.early_stopping_table(E, y, "", "val", 6, alphas=(0.05,))
    assert table.changed_vs_full_vote.tolist() == [0, 1]
    assert early_stopping.select_stop_alpha(E, y, 6, alphas=(0.05,), max_changed_rate=0.25) == 0.05


def calibration_case():
    """Four images, K = 20, rounds of 2, alpha 0.1 (a 2-0 start stops: flip chance 0.075): one that starts 2-0 and
    loses 6-14 (changed on the stored order), vote shares of class 1 of exactly 0.35 and 0.65 (the near-tie band's
    edges, both in; random orders that start with their minority change them) and a unanimous one."""
    return planted("00000011111111111111", "00000000000001111111", "11111111111110000000", "0" * 20)


def test_stopping_calibration_hand_row():
    """ablation:stopping_calibration #12, #14 (near-tie band edges excluded), #29 (seed None), #45, #46, #54, #55,
    #57, #58 (column names), #49, #53 (shares multiplied by n), #60-#62 (evaluations over the wrong total)."""
    E = calibration_case()
    cal = early_stopping.stopping_calibration({"val": E}, "t", [20], 2, alphas=(0.1,), n_orders=7, seed=3)
    changed, evals = early_stopping.changed_over_draw_orders(E, 20, 2, 0.1, 7, 3)
    assert changed.mean() > 0  # some orders change votes, so the share over orders is not 0 whatever its scale
    row = cal.iloc[0].to_dict()
    assert row == {
        "task": "t",
        "split": "val",
        "n_draws": 20,
        "alpha": 0.1,
        "n_images": 4,
        "changed_share": 0.25,  # one of four votes changed on the stored order
        "changed_share_mean_over_orders": pytest.approx(changed.mean() / 4),
        "changed_max_over_orders": int(changed.max()),
        "fraction_of_full_mean_over_orders": pytest.approx(evals.mean() / 40),  # 2 classes x 20 draws
        "n_draw_orders": 7,
        "near_tie_share": 0.5,  # shares 0.35 and 0.65 are in the band, 0.7 and 0 are not
        "jeffreys_near_tie_share": early_stopping.JEFFREYS_NEAR_TIE,
    }


def test_stopping_calibration_defaults():
    """ablation:stopping_calibration #1, #2 (defaults 50 orders, seed 0)."""
    E = calibration_case()
    run = lambda **k: early_stopping.stopping_calibration({"val": E}, "t", [20], 2, alphas=(0.1,), **k)
    pd.testing.assert_frame_equal(run(), run(n_orders=50, seed=0))
    assert run().n_draw_orders.tolist() == [50]
    assert not run().equals(run(seed=1))  # the seed matters on these images


def test_stopping_at_scale_caps_for_the_test_set_with_the_given_confidence():
    """ablation:stopping_at_scale #21 (cap for the validation size instead of the test size), #29 (confidence not
    passed on): validation of 8 clear images (cap 0.005), test of 20 (cap 0.002 at 95 %, 0.005 at 50 %)."""
    E_val, y_val = clear(8)
    E_test, y_test = clear(20)
    run = lambda **k: early_stopping.stopping_at_scale(
        E_val, y_val, E_test, y_test, "t", [20], 5, n_orders=2, **k
    ).iloc[0]
    assert (run().alpha_cap, run().alpha_selected_on_val) == (0.002, 0.002)
    assert (run(confidence=0.5).alpha_cap, run(confidence=0.5).alpha_selected_on_val) == (0.005, 0.005)


def scale_case():
    """K = 8, rounds of 2, alpha 0.25 (cap 0.25: target 25 %, confidence 0): a 2-0 start stops (flip chance 0.07),
    a 1-1 start does not. Test images: two unanimous, a 7-1 one and a 5-3 one whose early stop can go to its
    minority; on the stored order all four stop after 2 draws with their full vote."""
    E_val, y_val = planted("00000000", "11111111", "00000000", "11111111"), np.array([0, 1, 0, 1])
    E_test, y_test = planted("00000000", "11111111", "00000001", "11111000"), np.array([0, 1, 0, 0])
    settings = dict(alphas=(0.25,), max_changed_rate=0.25, confidence=0.0)
    return E_val, y_val, E_test, y_test, settings


def test_stopping_at_scale_hand_row_and_orders():
    """ablation:stopping_at_scale #52 (accuracy against y None), #76 (order seed None), #150-#155 (the target over
    orders: | for &, < for <=, rate / n, quarter / evaluations, 1.25 for 0.25), #159 (fraction times the full)."""
    E_val, y_val, E_test, y_test, settings = scale_case()
    row = early_stopping.stopping_at_scale(E_val, y_val, E_test, y_test, "t", [8], 2, n_orders=20, seed=0, **settings)
    row = row.iloc[0]
    assert (row.alpha_cap, row.alpha_selected_on_val) == (0.25, 0.25)
    assert (row.unet_evals_per_image, row.full_evals_per_image, row.changed_vs_full_vote) == (4.0, 16.0, 0)
    assert (row.accuracy, row.full_accuracy) == (0.75, 0.75)  # the 5-3 image votes 1, its label is 0
    changed, evals = early_stopping.changed_over_draw_orders(E_test, 8, 2, 0.25, 20, 0)
    # the target per order: at most 25 % of 4 votes changed (1) and at most a quarter of 16 evaluations (4)
    target = (changed <= 1) & (evals <= 4)
    # the planted orders reach every case the target separates: 1 changed vote at exactly 4 evaluations, none
    # changed at 4, and none changed above 4
    assert ((changed == 1) & (evals == 4)).any() and ((changed == 0) & (evals == 4)).any()
    assert ((changed == 0) & (evals > 4)).any()
    assert row.share_of_orders_meeting_target == pytest.approx(target.mean())
    assert row.changed_mean_over_orders == pytest.approx(changed.mean())
    assert row.fraction_of_full_mean_over_orders == pytest.approx(evals.mean() / 16)


def test_stopping_at_scale_defaults():
    """ablation:stopping_at_scale #2, #3, #4 (defaults: 50 orders, seed 0, draws "")."""
    E_val, y_val, E_test, y_test, settings = scale_case()
    run = lambda **k: early_stopping.stopping_at_scale(E_val, y_val, E_test, y_test, "t", [8], 2, **settings, **k)
    pd.testing.assert_frame_equal(run(), run(n_orders=50, seed=0, draws=""))
    assert (run().n_draw_orders.iloc[0], run().draws.iloc[0]) == (50, "")
    assert not run().equals(run(seed=1))  # the seed matters on these images


# ----------------------------------------------------------------------------- calibration (uncertainty)


def test_temperature_search_interval_is_e_minus_12_to_e_8():
    """uncertainty:fit_temperature #18, #19 (search interval widened): validation separable the right way drives
    T to the lower end, separable the wrong way to the upper end. The logit gaps (1e-6, 1e3) keep the NLL strictly
    monotone up to each end, where a gap of 2 would flatten it in float64 long before."""
    tiny, huge = np.array([[1e-6, 0.0], [0.0, 1e-6]]), np.array([[1e3, 0.0], [0.0, 1e3]])
    assert np.log(unc.fit_temperature(tiny, np.array([0, 1]))) == pytest.approx(-12, abs=1e-3)
    assert np.log(unc.fit_temperature(huge, np.array([1, 0]))) == pytest.approx(8, abs=1e-3)


def test_probabilities_default_temperature_is_1():
    """uncertainty:probabilities #1 (default temperature 2)."""
    np.testing.assert_allclose(unc.probabilities(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]])


def ramp(n):
    """n distinct confidences with a planted accuracy that drifts from them (for bin-count checks)."""
    conf = np.linspace(0.5, 0.99, n)
    return conf, (np.arange(n) % 3 != 0).astype(float)


def test_tie_safe_bins_of_distinct_values_and_the_default_count():
    """uncertainty:tie_safe_bins #1 (default 11 bins), #15 (size = c), #18 (size > share), #31 (remaining +=
    size): 20 distinct values in 10 bins are 10 pairs; 110 values make 10 bins by default."""
    bins = unc.tie_safe_bins(np.arange(20.0), 10)
    assert [b.tolist() for b in bins] == [[i, i + 1] for i in range(0, 20, 2)]
    assert len(unc.tie_safe_bins(np.arange(110.0))) == 10


def calibration_values():
    """Ten predictions, most certain first; the 8th and 10th are wrong. Raw confidences 0.95 down to 0.5, the
    calibrated ones 0.05 lower."""
    conf = np.linspace(0.95, 0.5, 10)
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 0])
    return 1 - conf, correct, conf, conf - 0.05


def test_ece_and_reliability_hand_values():
    """uncertainty:ece #12 (n_bins not passed on); reliability #2-#5 (arguments dropped, no test before). In two
    bins the lower five (0.5-0.7, 3 right) and upper five (0.75-0.95, all right); in ten, one per value."""
    _, correct, conf, _ = calibration_values()
    assert unc.ece(conf, correct, 2) == pytest.approx(0.5 * 0 + 0.5 * 0.15)
    assert unc.ece(conf, correct, 10) == pytest.approx(2.95 / 10)
    rel = unc.reliability(conf, correct, 2)
    assert [(c, a, n) for c, a, n in rel] == [(pytest.approx(0.6), 0.6, 5), (pytest.approx(0.85), 1.0, 5)]
    assert len(unc.reliability(conf, correct)) == 10


def test_calibration_default_bin_count_is_10():
    """uncertainty:ece #1, reliability #1, selective_metrics #1 (default 11 bins)."""
    conf, correct = ramp(110)
    assert unc.ece(conf, correct) == unc.ece(conf, correct, 10) != unc.ece(conf, correct, 11)
    assert len(unc.reliability(conf, correct)) == 10
    assert unc.selective_metrics(1 - conf, correct, conf)["ece"] == unc.ece(conf, correct, 10)


def test_selective_metrics_hand_row_with_calibrated_confidences():
    """uncertainty:selective_metrics #9, #10, #15, #16, #35, #36, #47, #48, #59, #60, #69, #70 (key names),
    #21-#23, #26 (coverages), #37, #49, #61, #71 (ECE / Brier always NaN: ece_calibrated and brier_calibrated had
    no value test), #44, #56 (n_bins not passed on)."""
    u, correct, conf, cal = calibration_values()
    out = unc.selective_metrics(u, correct, conf, cal, n_bins=2)
    expected = {
        "error_auroc": unc.error_auroc(u, correct),
        "aurc": unc.aurc(u, correct),
        "e_aurc": unc.excess_aurc(u, correct),
        "acc_at_90_coverage": 8 / 9,
        "acc_at_80_coverage": 7 / 8,
        "acc_at_70_coverage": 1.0,
        "ece": 0.075,  # bins (0.5-0.7: conf 0.6, 3/5 right) and (0.75-0.95: conf 0.85, all right)
        "ece_calibrated": 0.125,  # (0.45-0.65: 0.55 vs 0.6) and (0.7-0.9: 0.8 vs 1)
        "brier": 1.1625 / 10,
        "brier_calibrated": 1.2625 / 10,
    }
    assert out == pytest.approx(expected)
    assert unc.selective_metrics(u, correct, conf, cal)["ece_calibrated"] == pytest.approx(3.25 / 10)  # ten bins

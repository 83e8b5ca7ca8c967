"""Notebook 09's statistics: draw replicates, one run's paired numbers, the spread over runs and the verdicts."""

import math

import numpy as np
import pandas as pd
import pytest

from diffusion_classifier.analyses import classification, early_stopping, variance
from diffusion_classifier.classifier import rules


def _errors(n_images=200, n_draws=51, vote_edge=True, seed=0):
    """E for a binary task where the true class wins most draws by a little while the other class wins a few draws
    by a lot: the majority vote is right on every image and the mean error wrong on about half (vote_edge)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_images) % 2
    E = np.ones((n_images, 2, n_draws), dtype=np.float32)
    for i in range(n_images):
        wrong = 1 - y[i]
        E[i, wrong] += 0.1  # the true class wins each draw by 0.1 ...
        bad = rng.choice(n_draws, n_draws // 5, replace=False)
        big = 1.0 if (vote_edge and i % 4 < 2) else 0.2  # ... but loses a fifth of them by 1.0 on half the images
        E[i, wrong, bad] -= big
    return E, y


def test_replicate_slices_are_disjoint_blocks_in_draw_order():
    E = np.arange(2 * 2 * 12, dtype=float).reshape(2, 2, 12)
    reps = variance.replicate_slices(E, 5, 2)
    assert [r.shape[2] for r in reps] == [5, 5]
    np.testing.assert_array_equal(reps[0], E[:, :, :5])
    np.testing.assert_array_equal(reps[1], E[:, :, 5:10])
    with pytest.raises(ValueError, match="need 15 draws"):
        variance.replicate_slices(E, 5, 3)


def test_voting_outcome_hand_cases():
    """Catches: McNemar ignored (p = 0.052 with a CI above 0 would read "supported"), a later look read as
    confirmatory, the opposite direction called anything but "not supported"."""
    assert classification.voting_outcome(0.9, 51, 0.01, 0.05) == "supported"  # no McNemar given: the CI alone
    assert classification.voting_outcome(0.9, 51, 0.01, 0.05, p=0.01) == "supported"
    assert classification.voting_outcome(0.9, 251, 0.002, 0.034, p=0.052, look=3) == "inconclusive"
    assert classification.voting_outcome(0.9, 51, 0.002, 0.034, p=0.052) == "inconclusive"
    assert classification.voting_outcome(0.9, 251, 0.01, 0.05, p=0.01, look=3) == "nominal (exploratory, look 3)"
    assert classification.voting_outcome(0.9, 51, -0.05, -0.01, p=0.01) == "not supported"
    assert classification.voting_outcome(0.9, 51, -0.01, 0.02) == "inconclusive"
    assert classification.voting_outcome(0.9, 25, 0.01, 0.05) == "not testable"  # below the paper's N
    assert classification.voting_outcome(0.49, 51, 0.01, 0.05) == "not testable"  # no signal


def test_run_row_signs_planted_vote_advantage_and_a_better_resnet():
    E, y = _errors()
    perfect = np.stack([1 - y, y], 1).astype(float) * 0.98 + 0.01  # a ResNet that ranks every image right
    row = variance.run_row(E, y, perfect, "mean", n_boot=200, seed=0)
    assert row["vote_minus_mean_accuracy"] > 0.3 and row["vote_minus_mean_accuracy_ci_low"] > 0
    assert row["vote_minus_mean_only_a_right"] > 50 and row["vote_minus_mean_only_b_right"] == 0
    assert row["voting_outcome"] == "not testable"  # the headline (mean) rule has no signal here
    assert row["resnet_auc"] == 1.0 and row["minus_resnet_auc"] < 0  # diffusion (mean rule) - ResNet
    flipped = variance.run_row(E, y, perfect, "vote", n_boot=200, seed=0)  # the vote is right on every image
    assert flipped["accuracy"] == 1.0 and flipped["voting_outcome"] == "supported"
    half = np.stack([1 - y, y], 1).astype(float)
    half[::2] = half[::2, ::-1]  # a ResNet wrong on every other image
    better = variance.run_row(E, y, half, "vote", n_boot=200, seed=0)
    assert better["minus_resnet_accuracy"] == pytest.approx(0.5) and better["minus_resnet_accuracy_ci_low"] > 0


def test_spread_is_the_sd_over_runs_beside_the_bootstrap_sd():
    runs = pd.DataFrame(
        {
            "variance_source": ["draws"] * 3 + ["training"] * 2,
            **{m: [0.80, 0.82, 0.84, 0.70, 0.90] for m in variance.MEASURES},
            "auc_ci_low": [0.70] * 5,
            "auc_ci_high": [0.70 + 2 * 1.96 * 0.05] * 5,
        }
    )
    s = variance.spread(runs).set_index(["variance_source", "measure"])
    assert s.loc[("draws", "auc"), "sd"] == pytest.approx(0.02)
    assert s.loc[("training", "auc"), "sd"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert s.loc[("draws", "auc"), "test_image_sd"] == pytest.approx(0.05)
    assert s.loc[("draws", "auc"), "n_runs"] == 3 and s.loc[("training", "f1"), "max"] == 0.9


def test_verdicts_say_whether_the_outcome_holds_across_runs():
    E, y = _errors()
    perfect = np.stack([1 - y, y], 1).astype(float)
    base = variance.run_row(E, y, perfect, "vote", n_boot=100, seed=0)
    no_edge = variance.run_row(*_errors(vote_edge=False), perfect, "vote", n_boot=100, seed=0)
    assert base["voting_outcome"] == "supported" and no_edge["voting_outcome"] != "supported"
    rng = np.random.default_rng(2)  # a weaker diffusion classifier: per image the wrong class is worse by N(0.05, 0.05)
    weak = np.ones((200, 2, 51), dtype=np.float32)
    weak[np.arange(200), 1 - y] += rng.normal(0.05, 0.05, 200)[:, None] + rng.normal(0, 0.01, (200, 51))
    mean_rule = variance.run_row(weak, y, perfect, "mean", n_boot=100, seed=0)
    runs = pd.DataFrame(
        [
            {**base, "variance_source": "draws", "training_seed": 0},
            {**base, "variance_source": "draws", "training_seed": 0},
            {**base, "variance_source": "training", "training_seed": 0},
            {**no_edge, "variance_source": "training", "training_seed": 1},
        ]
    )
    lines = variance.verdicts(runs, "toy")
    assert "the same outcome in every run (supported)" in lines[0]
    assert "not consistent across runs" in lines[1]
    assert "SD of the headline AUC" in lines[3]
    # a diffusion rule worse than a perfect ResNet in both runs: counted as significantly lower, with a minus sign
    worse = pd.DataFrame([{**mean_rule, "variance_source": "training", "training_seed": s} for s in (0, 1)])
    assert mean_rule["minus_resnet_auc"] < 0 and mean_rule["auc_ci_low"] > 0.5
    line = variance.verdicts(worse, "toy")[1]
    assert "significantly lower in 2" in line and f"{mean_rule['minus_resnet_auc']:+.3f}".startswith("-")


def test_stopping_alpha_is_chosen_on_validation_and_stopping_at_scale_saves_draws():
    rng = np.random.default_rng(1)

    def errors(n, K, margin):
        """Per image a class-1 win probability: most images clear (0.9 / 0.1), a few close to a coin flip."""
        p = np.where(rng.random(n) < 0.8, np.where(rng.random(n) < 0.5, 0.9, 0.1), 0.5)
        wins = rng.random((n, K)) < p[:, None]
        E = np.ones((n, 2, K), dtype=np.float32)
        E[:, 1] = np.where(wins, 1 - margin, 1 + margin)
        return E, (p > 0.5).astype(int)

    Ev, yv = errors(300, 101, 0.1)
    Et, yt = errors(624, 101, 0.1)  # the cap is set for the test set: 624 images allow 0.002, 300 only 0.001
    alpha = early_stopping.select_stop_alpha(Ev, yv, 1, max_changed_rate=0.005)
    t = early_stopping.early_stopping_table(Ev, yv, "", "val", 1, (alpha,))
    assert t[t.stopping == "sequential"].changed_vs_full_vote.iloc[0] <= 0.005 * 300  # the rule it was chosen by
    assert 0 < alpha <= 0.005
    assert (
        early_stopping.select_stop_alpha(Ev, yv, 1, alphas=(0.9999,), max_changed_rate=0.0) == 0.0
    )  # nothing qualifies
    # chosen on validation: where every validation vote is a coin flip only exact stopping keeps them, even though
    # the test votes are clear enough for any alpha
    # (1000 coin flips: at alpha = 0.004 about 3 % of the votes change, against the 5 allowed: a veto by many votes)
    flips = np.ones((1000, 2, 101), dtype=np.float32)
    flips[:, 1] = np.where(rng.random((1000, 101)) < 0.5, 0.9, 1.1)
    yf = np.zeros(1000, dtype=int)
    t = early_stopping.early_stopping_table(flips, yf, "", "val", 1, (0.004,))
    assert t[t.stopping == "sequential"].changed_vs_full_vote.iloc[0] >= 15  # far above the 5 allowed
    # (at 50 % confidence 0.004 is under the cap for 624 test images, so only the veto can make stopping exact)
    exact = early_stopping.stopping_at_scale(
        flips, yf, Et, yt, "toy", [51, 101], 1, (0.004,), n_orders=2, confidence=0.5
    )
    assert (exact.alpha_cap == 0.004).all() and (exact.val_changed_at_cap >= exact.val_veto_needs).all()  # vetoed
    assert (exact.alpha_selected_on_val == 0.0).all() and exact.changed_vs_full_vote.eq(0).all()
    assert "validation votes" in early_stopping.stopping_at_scale_verdict(next(exact.itertuples()))
    # where no alpha on the grid meets the cap, stopping is exact for that reason, not validation's
    capless = early_stopping.stopping_at_scale(Ev, yv, Et, yt, "toy", [51], 1, (0.005,), n_orders=2)
    assert capless.alpha_cap.eq(0).all() and "meets the cap" in early_stopping.stopping_at_scale_verdict(
        next(capless.itertuples())
    )
    s = early_stopping.stopping_at_scale(Ev, yv, Et, yt, "toy", [51, 101], 1).set_index("n_draws")
    assert (
        s.loc[101, "fraction_of_full"] < s.loc[51, "fraction_of_full"] < 0.5
    )  # clear votes stop early, more so at larger N
    assert s.loc[101, "full_evals_per_image"] == 202
    assert (s.alpha_cap == 0.002).all() and (s.alpha_selected_on_val <= 0.002).all()
    assert (s.val_veto_needs == 2).all() and (
        s.val_changed_at_cap < s.val_veto_needs
    ).all()  # 1 of 300 allowed; not vetoed
    assert early_stopping.select_stop_alpha(Ev, yv, 1) <= 0.001  # capped for its own 300 images by default
    assert "Target" in early_stopping.stopping_at_scale_verdict(next(s.reset_index().itertuples()))
    # a scoring seed named in the table is named in the sentence; a veto below the cap says so
    named = early_stopping.stopping_at_scale(Ev, yv, Et, yt, "toy", [51], 1, n_orders=2, draws="fresh", scoring_seed=7)
    assert ", scoring seed 7, fresh)" in early_stopping.stopping_at_scale_verdict(next(named.itertuples()))
    half = np.concatenate([flips[:150], Ev[:150]])  # 75 coin flips among 300: 0.002 vetoed, 0.0001 not
    partial = early_stopping.stopping_at_scale(half, yv, Et, yt, "toy", [101], 1, (0.0001, 0.002), n_orders=2)
    r = next(partial.itertuples())
    assert r.alpha_cap == 0.002 and 0 < r.alpha_selected_on_val < r.alpha_cap and r.val_changed_at_cap >= 2
    assert "the largest α under the cap" in early_stopping.stopping_at_scale_verdict(r)


def test_stopping_alpha_never_exceeds_the_target_rate_and_draw_orders_are_resampled():
    rng = np.random.default_rng(2)
    # every vote clear: any alpha changes nothing on validation, yet alpha stays at or below the target rate
    # (alpha bounds the expected share of changed votes; a larger one has only the validation count as guard)
    clear = np.ones((200, 2, 101), dtype=np.float32)
    clear[:, 1] = np.where(rng.random((200, 101)) < 0.95, 0.9, 1.1)
    y = np.ones(200, dtype=int)
    # (at a loose confidence the cap is the target rate itself; at 95 % one run on 200 images allows 1 changed vote,
    # and Poisson(0.005 * 200) exceeds 1 with chance 0.26, so the cap drops to 0.001)
    assert early_stopping.select_stop_alpha(clear, y, 1, (0.001, 0.005, 0.05), 0.005, confidence=0.5) == 0.005
    assert early_stopping.select_stop_alpha(clear, y, 1, alphas=(0.001, 0.005, 0.05), max_changed_rate=0.005) == 0.001
    assert (
        early_stopping.select_stop_alpha(clear, y, 1, alphas=(0.001, 0.05), max_changed_rate=0.002, confidence=0.5)
        == 0.001
    )
    assert early_stopping.select_stop_alpha(clear, y, 1, alphas=(0.01, 0.05), max_changed_rate=0.005) == 0.0
    # an order that misleads: the first 21 draws favour class 0, the other 80 class 1. In draw order, stopping
    # at a loose alpha decides for class 0 and changes every vote; random orders mostly do not
    E = np.ones((50, 2, 101), dtype=np.float32)
    E[:, 1, :21], E[:, 1, 21:] = 1.1, 0.9
    first = rules.replay_early_stop(E, 1, 0.2)
    assert (rules.predict_vote(first) != rules.predict_vote(E)).all()
    changed, evals = early_stopping.changed_over_draw_orders(E, 101, 1, 0.2, n_orders=20, seed=0)
    assert changed.shape == (20,) and changed.mean() < 25 and (evals < 202).all()
    # the orders replay as one stack; each order alone gives the same counts
    rng = np.random.default_rng(0)
    one_by_one = [early_stopping._stopped(E[:, :, rng.permutation(101)], 1, 0.2) for _ in range(20)]
    assert changed.tolist() == [c for _, c, _ in one_by_one] and evals.tolist() == [e for _, _, e in one_by_one]
    exact, _ = early_stopping.changed_over_draw_orders(E, 101, 1, 0.0, n_orders=5, seed=0)
    assert (exact == 0).all()  # exact stopping never changes a vote, in any order
    s = early_stopping.stopping_at_scale(clear, y, clear, y, "toy", [51, 101], 1, n_orders=4)
    assert (s.n_draw_orders == 4).all() and (s.changed_max_over_orders >= s.changed_mean_over_orders).all()
    assert "random orders" in early_stopping.stopping_at_scale_verdict(next(s.itertuples()))


def test_alpha_cap_makes_one_run_meet_the_target_with_the_stated_confidence():
    # 624 test images, target 0.5 %: 3 changed votes allowed. Simulated runs whose changed count is a sum of
    # independent per-image events with mean alpha * 624 (a tenth of the images near a tie carry all of it):
    # at the cap the target holds in >= 95 % of runs; at the next alpha up, the target rate itself, it does not
    n, rate = 624, 0.005
    cap = early_stopping.alpha_cap(n, rate)
    assert cap == 0.002 and cap < rate
    rng = np.random.default_rng(4)
    near = n // 10

    def share_of_runs_within(alpha):
        changed = (rng.random((20_000, near)) < alpha * n / near).sum(1)
        return float((changed <= math.floor(rate * n)).mean())

    assert share_of_runs_within(cap) >= 0.95
    assert share_of_runs_within(0.005) < 0.8  # the old cap: the target as the expected count fails often
    # the allowed count is floor(rate * n) = 3 (ceil would allow 4 and pass 0.003: Poisson(1.87) > 4 has chance 0.04)
    assert early_stopping.alpha_cap(n, rate, alphas=(0.002, 0.003)) == 0.002
    assert early_stopping.alpha_cap(n, rate, alphas=(0.003, 0.005)) == 0.0  # both under the rate, neither confident
    # the cap moves with the count allowed (not monotone in n); none above the rate; Markov where none is allowed
    # (10 images: P(any change) <= the expected count 10 alpha, so 0.005 passes at 95 % and 0.001 at 99 %)
    assert (
        early_stopping.alpha_cap(200, rate) == 0.001 and early_stopping.alpha_cap(20, rate, alphas=(0.01, 0.05)) == 0.0
    )
    assert early_stopping.alpha_cap(10, rate) == 0.005 and early_stopping.alpha_cap(10, rate, confidence=0.99) == 0.001
    with pytest.raises(ValueError, match="at least one image"):
        early_stopping.alpha_cap(0, rate)
    # Poisson only where the count allowed is at least the mean (Hoeffding's condition), Markov's mean / (k + 1)
    # otherwise: at 10 images and 95.1 % Poisson would pass 0.005 (P(count > 0) = 0.049), Markov does not (0.05)
    assert early_stopping.changed_tail_bound(0, 0.05) == pytest.approx(0.05)
    assert early_stopping.changed_tail_bound(3, 3.12) == pytest.approx(0.78)
    assert early_stopping.changed_tail_bound(3, 1.248) == pytest.approx(0.0381, abs=1e-4)
    assert early_stopping.alpha_cap(10, rate, alphas=(0.005,), confidence=0.951) == 0.0
    # a million images: the count's spread is small beside its mean, so alpha may come close to the rate
    # (Poisson(4,900) exceeds 5,000 with chance 0.076, Poisson(4,800) with 0.002)
    assert early_stopping.alpha_cap(10**6, rate, alphas=(0.004, 0.0048, 0.0049, 0.006)) == 0.0048
    assert early_stopping.alpha_cap(10**6, rate, alphas=(0.004, 0.0048, 0.0049), confidence=0.9) == 0.0049


def test_stopping_at_the_cap_meets_the_target_where_vote_shares_follow_the_prior():
    # the cap's premise: images whose class-1 win chance follows the stopping rule's Jeffreys prior change, on
    # average, at most alpha of their votes, so 50 simulated runs of 624 images at N = 101 change <= 624 alpha on
    # average and stay within the 3 allowed in >= 95 % of runs; alpha = 0.05 (above the cap) does not
    rng = np.random.default_rng(5)
    n, runs = 624, 50
    p = rng.beta(0.5, 0.5, n * runs)
    E = np.ones((n * runs, 2, 101), dtype=np.float32)
    E[:, 1] = np.where(rng.random((n * runs, 101)) < p[:, None], 0.9, 1.1)
    full = rules.predict_vote(E)

    def changed(alpha):
        return (rules.predict_vote(rules.replay_early_stop(E, 1, alpha)) != full).reshape(runs, n).sum(1)

    cap = early_stopping.alpha_cap(n, 0.005)
    at_cap, loose = changed(cap), changed(0.05)
    assert at_cap.mean() <= cap * n and (at_cap <= 3).mean() >= 0.95
    assert loose.mean() > 3 and (loose <= 3).mean() < 0.5


def test_stopping_calibration_flags_images_nearer_a_tie_than_the_prior():
    from scipy.stats import beta

    assert early_stopping.JEFFREYS_NEAR_TIE == pytest.approx(beta.cdf(0.65, 0.5, 0.5) - beta.cdf(0.35, 0.5, 0.5))
    rng = np.random.default_rng(3)

    def errors(n, K, p):
        E = np.ones((n, 2, K), dtype=np.float32)
        E[:, 1] = np.where(rng.random((n, K)) < p, 0.9, 1.1)  # class 1 wins a draw with probability p
        return E

    # coin flips: every image near a tie, far more than the prior's 19 %: stopping changes more than alpha
    # of them; clear images (p = 0.95): none near a tie, and fewer than alpha changed
    cal = early_stopping.stopping_calibration(
        {"val": errors(200, 101, 0.95), "test": errors(200, 101, 0.5)}, "toy", [101], 1, alphas=(0.01,), n_orders=5
    ).set_index("split")
    assert cal.loc["test", "near_tie_share"] > 0.9 > early_stopping.JEFFREYS_NEAR_TIE > cal.loc["val", "near_tie_share"]
    assert cal.loc["test", "changed_share_mean_over_orders"] > 0.01 >= cal.loc["val", "changed_share_mean_over_orders"]
    line = early_stopping.stopping_calibration_verdict(cal.reset_index(), 101, 0.01)
    assert "exceeds α on test" in line and "19.4%" in line
    with pytest.raises(ValueError, match="need at least as many stored draws"):
        early_stopping.changed_over_draw_orders(errors(5, 11, 0.5), 21, 1, 0.01, 2, 0)

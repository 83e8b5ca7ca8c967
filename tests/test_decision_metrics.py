"""Decision rules on hand-made error tensors, and the metrics against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from diffusion_classifier.analyses import classification, early_stopping
from diffusion_classifier.classifier import rules
from diffusion_classifier.evaluation.metrics import binary_metrics, metrics_with_ci


def E_from(rows):
    """rows: per image, per class, the list of errors over draws."""
    return np.array(rows, dtype=np.float32)


def test_mean_and_vote_can_disagree():
    # class 0 wins 2 of 3 draws by a hair; class 1 wins one draw by a lot, so it has the lower mean
    E = E_from([[[1.0, 1.0, 1.0], [1.01, 1.01, 0.1]]])
    assert rules.predict_mean(E).tolist() == [1]
    assert rules.predict_vote(E).tolist() == [0]
    assert rules.votes(E).tolist() == [[2, 1]]


def test_vote_tie_goes_to_lower_mean_error_then_lower_index():
    E = E_from(
        [
            [[1.0, 2.0], [2.0, 0.5]],  # 1 vote each; class 1 mean 1.25 < 1.5
            [[1.0, 2.0], [2.0, 1.0]],
        ]
    )  # 1 vote each, equal means -> lowest index
    assert rules.predict_vote(E).tolist() == [1, 0]


def test_nan_draws_do_not_vote_and_restrict():
    E = E_from([[[1.0, np.nan, 3.0], [2.0, np.nan, 1.0]]])
    assert rules.votes(E).tolist() == [[1, 1]]
    U = np.array([[0.1, 0.5, 0.9]], dtype=np.float32)
    assert rules.predict(rules.restrict(E, U, 0.0, 0.5), "vote").tolist() == [0]
    assert rules.predict(rules.restrict(E, U, 0.5, 1.0), "vote").tolist() == [1]
    assert rules.predict(rules.restrict(E, U, n_draws=1), "mean").tolist() == [0]


def test_vote_decided_is_exact():
    E = E_from([[[1, 1, 1], [2, 2, 2]]])  # 3-0 lead
    assert rules.vote_decided(E, 2).tolist() == [True]
    assert rules.vote_decided(E, 3).tolist() == [False]  # 3 more could tie it


def votes_tensor(a, b):
    """An image whose first a draws vote for class 0 and next b for class 1."""
    return E_from([[[0.0] * a + [1.0] * b, [1.0] * a + [0.0] * b]])


@pytest.mark.parametrize("a,b,remaining", [(6, 0, 26), (5, 3, 24), (10, 4, 18), (3, 3, 10), (9, 1, 2)])
def test_flip_probability_matches_a_simulation_of_its_model(a, b, remaining):
    """Leader's future share p ~ Beta(a + 1/2, b + 1/2), future votes ~ Binomial(remaining, p); the leader
    fails when it ends with no more votes than the runner-up."""
    rng = np.random.default_rng(0)
    p = rng.beta(a + 0.5, b + 0.5, 400_000)
    x = rng.binomial(remaining, p)
    simulated = np.mean(a + x <= b + remaining - x)
    computed = rules.vote_flip_probability(votes_tensor(a, b), remaining)[0]
    assert computed == pytest.approx(simulated, abs=3e-3)


def test_sequential_stopping_stops_clear_votes_early_and_split_votes_never():
    K = 32
    assert rules.vote_decided(votes_tensor(6, 0), K - 6, alpha=0.01).tolist() == [True]
    assert rules.vote_decided(votes_tensor(6, 0), K - 6, alpha=0.0).tolist() == [False]  # exact needs 17
    assert rules.vote_decided(votes_tensor(8, 8), K - 16, alpha=0.2).tolist() == [False]
    assert rules.vote_flip_probability(votes_tensor(20, 0), 12).tolist() == [0.0]  # already exact


def test_replayed_exact_stopping_keeps_every_vote_and_saves_less_than_half():
    rng = np.random.default_rng(1)
    E = rng.random((300, 2, 32)).astype(np.float32)
    E[:150, 0] *= 0.6  # half the images have a clear winner
    exact = rules.replay_early_stop(E, round_size=2)
    assert (rules.predict_vote(exact) == rules.predict_vote(E)).all()
    evaluated = np.isfinite(exact).sum((1, 2))
    assert evaluated.min() > 32  # two classes: more than K/2 draws before any image can stop
    assert evaluated[:150].mean() < 64
    loose = np.isfinite(rules.replay_early_stop(E, round_size=2, alpha=0.05)).sum((1, 2))
    assert (loose <= evaluated).all() and loose.mean() < evaluated.mean()


def test_replay_stops_each_image_at_the_first_round_its_votes_so_far_are_decided():
    """The replay counts votes incrementally; the definition checks `vote_decided` on all draws so far."""
    rng = np.random.default_rng(4)
    E = rng.random((60, 3, 30)).astype(np.float32)
    E[:20, 0] *= 0.5  # some clear winners
    E[20:30, 2, 12:] = np.nan  # a class dropped after 12 draws (successive elimination)
    for round_size, alpha in [(1, 0.0), (1, 0.05), (4, 0.01), (7, 0.2)]:
        stops = np.full(len(E), E.shape[2])
        for stop in reversed(rules.round_ends(E.shape[2], round_size)):
            decided = rules.vote_decided(E[:, :, :stop], E.shape[2] - stop, alpha)
            stops[decided] = stop
        replay = rules.replay_early_stop(E, round_size, alpha)
        drawn = np.isfinite(replay).any(1).sum(1)
        assert (drawn == stops).all(), (round_size, alpha)


def test_scores_for_auc_rank_the_right_way():
    E = E_from([[[1.0, 1.0], [2.0, 2.0]], [[2.0, 2.0], [1.0, 1.0]]])
    for rule in ("mean", "vote"):
        s = rules.positive_score(E, rule)
        assert s[1] > s[0]
    with pytest.raises(ValueError):
        rules.predict(E, "median")


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = y + rng.normal(0, 1, 200)
    score[:20] = 0.5  # ties
    pred = (score > 0.5).astype(int)
    m = binary_metrics(y, pred, score)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, score))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["sensitivity"] == pytest.approx(((pred == 1) & (y == 1)).sum() / (y == 1).sum())


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    score = y + rng.normal(0, 1.5, 300)
    a = metrics_with_ci(y, (score > 0.5).astype(int), score, n_boot=200, seed=3)
    b = metrics_with_ci(y, (score > 0.5).astype(int), score, n_boot=200, seed=3)
    assert a == b
    assert a["auc_ci_low"] < a["auc"] < a["auc_ci_high"]
    assert 0.02 < a["auc_ci_high"] - a["auc_ci_low"] < 0.2


def test_early_stopping_table_reports_savings_and_changes():
    rng = np.random.default_rng(2)
    E = rng.random((200, 2, 32)).astype(np.float32)
    E[:100, 1] *= 0.5
    y = (np.arange(200) < 100).astype(int)
    t = early_stopping.early_stopping_table(E, y, "toy", "test", round_size=1, alphas=(0.01, 0.3))
    exact = t[t.stopping == "exact"].iloc[0]
    assert exact.changed_vs_full_vote == 0 and 1 < exact.speedup < 2
    assert t.speedup.is_monotonic_increasing  # a larger alpha never draws more
    assert (t.full_vote_accuracy == t.full_vote_accuracy.iloc[0]).all()


def test_paired_bootstrap_and_mcnemar_hand_computed():
    from diffusion_classifier.evaluation import paired

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    a = np.array([1, 1, 1, 0, 0, 0, 0, 1])  # right on 6
    b = np.array([1, 0, 0, 0, 0, 0, 1, 1])  # right on 3 (images 0, 4, 5), all of which a gets right too
    m = paired.mcnemar(y, a, b)
    assert (m["only_a_right"], m["only_b_right"]) == (3, 0)
    assert m["mcnemar_p"] == pytest.approx(0.25)  # two-sided exact: 2 * 0.5**3
    assert paired.mcnemar(y, a, a)["mcnemar_p"] == 1.0
    d = paired.bootstrap_difference(y, (a, a.astype(float)), (b, b.astype(float)), n_boot=300, seed=0)
    assert d["accuracy"][0] == pytest.approx(0.375)
    assert d["accuracy"][1] <= 0.375 <= d["accuracy"][2]
    same = paired.bootstrap_difference(y, (a, a.astype(float)), (a, a.astype(float)), n_boot=50, seed=0)
    assert same["auc"] == (0.0, 0.0, 0.0)  # the same resamples for both: identical methods never differ


def test_vote_scores_break_ties_by_the_mean_error():
    E = np.array(
        [
            [[0.1, 0.1, 0.9], [0.2, 0.2, 0.1]],  # 2 of 3 votes for class 0, mean errors 0.367 vs 0.167
            [[0.1, 0.1, 0.3], [0.2, 0.2, 0.1]],
        ]
    )  # 2 of 3 votes for class 0, mean errors 0.167 vs 0.167
    s = rules.positive_score(E, "vote")
    assert rules.predict_vote(E).tolist() == [0, 0]
    assert s[0] > s[1]  # same vote share; image 0's mean error favours class 1 more
    assert abs(s[0] - s[1]) < 1e-5


def _auc(y, score):
    """ROC AUC by counting pairs (ties count one half): independent of metrics.binary_metrics."""
    pos, neg = score[y == 1][:, None], score[y == 0][None, :]
    return ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)


def test_a_toy_rule_is_one_registry_entry_and_gets_its_rows_in_notebook_04s_tables(monkeypatch):
    """#17's acceptance test: a rule added to rules.RULES alone (here the median error; the test patches
    nothing else) has its own rows in the tables notebook 04 builds with classification.ablation_table,
    classification.val_selected_rows and classification.predictions, with the values it implies."""
    median = rules.Rule(lambda E: np.nanmedian(E, 2).argmin(1), lambda E: -np.nanmedian(E, 2), description="toy")
    monkeypatch.setitem(rules.RULES, "median", median)
    rng = np.random.default_rng(3)
    n, K = 60, 5
    y = rng.integers(0, 2, n)
    E = rng.gamma(2.0, 0.5, (n, 2, K))
    E[np.arange(n), y] *= 0.8  # the true class tends to the lower error
    U = np.tile((np.arange(K) + 0.5) / K, (n, 1))  # times 0.1, 0.3, ..., 0.9: [0, 0.6) keeps draws 0-2 of each image
    t_ranges = [(0.0, 0.6)]

    table = classification.ablation_table(E, U, y, "toy", "diffusion-unet", [1, 3, K], t_ranges, n_boot=50, seed=0)
    assert list(dict.fromkeys(table.rule)) == ["mean", "vote", "median"]
    rows = table[table.rule == "median"].set_index(["n_draws", "t_range"])
    assert len(rows) == 4  # N = 1, 3, 5 over the full range, and the timestep range
    m3 = np.median(E[:, :, :3], 2)  # the first 3 draws; also the draws with t in [0, 0.6)
    for key in ((3, classification.FULL_RANGE), (3, classification.fmt_range(*t_ranges[0]))):
        r = rows.loc[key]
        assert r.accuracy == (m3.argmin(1) == y).mean()
        assert r.auc == pytest.approx(_auc(y, m3[:, 0] - m3[:, 1]))
        assert r.auc_ci_low <= r.auc <= r.auc_ci_high
        assert r.unet_evals_per_image == 2 * 3
    m1 = E[:, :, 0]
    assert rows.loc[(1, classification.FULL_RANGE)].accuracy == (m1.argmin(1) == y).mean()

    selected = classification.val_selected_rows(E, U, y, E, U, y, "toy", "diffusion-unet", t_ranges, n_boot=0)
    assert "median" in set(selected.rule)

    preds = classification.predictions(E, y, "toy", "test", 0, [3])
    mine = preds[preds.rule == "median"]
    assert mine.prediction.tolist() == m3.argmin(1).tolist()
    assert np.allclose(mine.score, m3[:, 0] - m3[:, 1])
    assert set(classification.paired_table(E, y, "toy", [3]).a) == {
        "vote N=3"
    }  # the paper's comparison stays vote - mean

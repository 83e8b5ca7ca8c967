"""The re-run comparison (rerun.py): paired on images, signed re-run - committed, refuses mismatched images."""

import numpy as np
import pandas as pd
import pytest

from diffusion_classifier.analyses import rerun


def _predictions(y, score, model="diffusion-unet", rule="vote", n_draws=51):
    return pd.DataFrame(
        {
            "task": "toy",
            "split": "test",
            "image": np.arange(len(y)),
            "label": y,
            "model": model,
            "rule": rule,
            "n_draws": n_draws,
            "seed": 0,
            "prediction": (score > 0.5).astype(int),
            "score": score,
        }
    )


@pytest.fixture
def runs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = 1 / (1 + np.exp(-(4 * (y - 0.5) + rng.normal(0, 1, len(y)))))  # AUC about 0.97
    worse = 1 / (1 + np.exp(-(1 * (y - 0.5) + rng.normal(0, 1, len(y)))))  # AUC about 0.75
    return y, _predictions(y, good), _predictions(y, worse)


def test_a_worse_rerun_gives_a_negative_paired_difference_outside_the_committed_ci(runs):
    y, committed, worse = runs
    row = rerun.compare(committed, worse, n_boot=200).iloc[0]
    assert row.rerun_auc < row.committed_auc
    assert row.auc_diff == pytest.approx(row.rerun_auc - row.committed_auc)  # sign: re-run minus committed
    assert row.auc_diff_ci_high < 0 and row.rerun_auc_outside_committed_ci
    assert row.only_committed_right > row.only_rerun_right
    changed = np.mean(committed.prediction.to_numpy() != worse.prediction.to_numpy())
    assert row.decisions_changed == pytest.approx(changed) and changed > 0.1
    # the same run read twice: nothing moved
    same = rerun.compare(committed, committed.sample(frac=1, random_state=1), n_boot=200).iloc[0]
    assert same.auc_diff == 0 and same.decisions_changed == 0 and not same.rerun_auc_outside_committed_ci
    (sentence,) = rerun.verdict(rerun.compare(committed, worse, n_boot=200), "fp32", {"rule": "vote", "n_draws": 51})
    assert "outside that CI" in sentence and "these two models differ significantly" in sentence


def test_only_rows_in_both_runs_are_compared_and_other_images_are_refused(runs):
    y, committed, worse = runs
    other_model = worse.assign(model="resnet18", rule="softmax", n_draws=0)
    both = rerun.compare(pd.concat([committed, other_model]), pd.concat([worse, other_model]), n_boot=0)
    assert sorted(both.model) == ["diffusion-unet", "resnet18"]
    with pytest.raises(ValueError, match="test images or labels differ"):
        rerun.compare(committed, worse.assign(label=1 - worse.label), n_boot=0)
    with pytest.raises(ValueError, match="test images or labels differ"):
        rerun.compare(committed, worse.iloc[:-1], n_boot=0)
    with pytest.raises(ValueError, match="share no"):
        rerun.compare(committed, other_model, n_boot=0)


def test_runs_of_another_profile_or_the_same_models_are_refused(runs):
    y, committed, worse = runs
    prov = {"profile": "cpu", "seed": 0}
    rerun.check_comparable(prov, prov, committed, worse)
    with pytest.raises(ValueError, match="differ in seed"):
        rerun.check_comparable(prov, {**prov, "seed": 1}, committed, worse)
    with pytest.raises(ValueError, match="reused the committed models"):
        rerun.check_comparable(prov, prov, committed, committed.copy())


def test_summary_states_each_tasks_headline_rerun_rows(runs, tmp_path, monkeypatch):
    from diffusion_classifier.report import summary

    y, committed, worse = runs
    both = pd.concat([committed, committed.assign(task="other")]), pd.concat([worse, worse.assign(task="other")])
    monkeypatch.setenv("DC_RESULTS_DIR", str(tmp_path))
    (tmp_path / "tables").mkdir()
    rerun.compare(*both, n_boot=50).to_csv(tmp_path / "tables" / "rerun_fp32.csv", index=False)
    text = summary.details()  # no provenance here: the headline N is the top of each task's grid
    assert "The same study re-run: fp32" in text
    assert text.count("the one fp32 re-run's test AUC") == 2  # toy and other: one headline row each

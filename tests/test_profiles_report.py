"""Profiles, the generated verdicts and the summary page."""
import numpy as np
import pandas as pd
import pytest

from diffusion_classifier import ablation, profiles, summary


def test_profiles_merge_and_reject_typos():
    cfg = profiles.get_profile("cpu", "melanoma", {"train": {"steps": 7}})
    assert cfg["train"]["steps"] == 7 and cfg["data"]["resolution"] == 64 and cfg["train"]["batch_size"] == 64
    assert profiles.get_profile("paper")["diffusion"]["prediction_type"] == "v_prediction"
    with pytest.raises(KeyError, match="stepz"):
        profiles.get_profile("cpu", None, {"train": {"stepz": 1}})
    with pytest.raises(KeyError, match="unknown profile"):
        profiles.get_profile("gpu")


def test_ablation_table_and_verdict_follow_the_numbers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    # class y gets the lower error on 70% of draws, with a small margin; the other draws favour the wrong class
    # by a large margin, so the mean rule is fooled more often than the vote
    E = np.ones((200, 2, 16))
    wins = rng.random((200, 16)) < 0.7
    E[np.arange(200), 1 - y] += np.where(wins, 0.01, -0.05)
    U = rng.random((200, 16))
    tab = ablation.ablation_table(E, U, y, "toy", "diffusion-unet", [1, 4, 16], [[0, 0.5], [0.5, 1]], n_boot=50)
    assert set(tab.columns) == set(ablation.COLUMNS)
    full = tab[(tab.t_range == "[0.00,1.00)") & (tab.n_draws == 16)].set_index("rule")
    assert full.loc["vote", "accuracy"] > full.loc["mean", "accuracy"]
    text = ablation.voting_verdict(tab, "toy")
    assert "K = 16" in text and f"{full.loc['vote', 'accuracy']:.3f}" in text
    assert tab.unet_evals_per_image.max() == 32


def test_summary_reads_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("DC_RESULTS_DIR", str(tmp_path))
    (tmp_path / "tables").mkdir()
    pd.DataFrame([{"task": "t", "split": "test", "class": "a", "count": 3}]).to_csv(tmp_path / "tables" / "data_summary.csv", index=False)
    text = summary.build()
    assert "| t | test | a | 3 |" in text

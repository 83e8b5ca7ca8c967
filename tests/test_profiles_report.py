"""Profiles, the generated verdicts and the summary page."""

import numpy as np
import pandas as pd
import pytest

from diffusion_classifier import profiles
from diffusion_classifier.analyses import classification
from diffusion_classifier.report import summary


def test_profiles_merge_and_reject_typos():
    cfg = profiles.get_profile("cpu", "melanoma", {"train": {"steps": 7}})
    assert cfg["train"]["steps"] == 7 and cfg["data"]["resolution"] == 64 and cfg["train"]["batch_size"] == 64
    assert profiles.get_profile("paper")["diffusion"]["prediction_type"] == "v_prediction"
    with pytest.raises(KeyError, match="stepz"):
        profiles.get_profile("cpu", None, {"train": {"stepz": 1}})
    with pytest.raises(KeyError, match="unknown profile"):
        profiles.get_profile("gpu")


def planted_votes(n=300, k=51, seed=0):
    """Class y gets the lower error on 70% of draws by a small margin; the other draws favour the wrong class by a
    large margin, so the mean rule is fooled more often than the vote."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    E = np.ones((n, 2, k))
    wins = rng.random((n, k)) < 0.7
    E[np.arange(n), 1 - y] += np.where(wins, 0.01, -0.05)
    return E, rng.random((n, k)), y


def test_ablation_table_and_voting_verdict_follow_the_numbers():
    E, U, y = planted_votes()
    tab = classification.ablation_table(E, U, y, "toy", "diffusion-unet", [1, 11, 51], [[0, 0.5], [0.5, 1]], n_boot=50)
    assert list(tab.columns) == classification.COLUMNS and tab.unet_evals_per_image.max() == 102
    full = tab[(tab.t_range == classification.FULL_RANGE) & (tab.n_draws == 51)].set_index("rule")
    assert full.loc["vote", "accuracy"] > full.loc["mean", "accuracy"]
    pairs = classification.paired_table(E, y, "toy", [1, 11, 51], n_boot=200)
    assert pairs.loc[0, "accuracy_diff"] == 0  # N = 1: both rules are the same single draw
    text = classification.voting_verdict(pairs, full.loc["vote"], "toy")
    assert "N = 51" in text and "**supported**" in text
    # the true class wins only 40% of the draws, by a large margin: the mean rule is right, the vote wrong
    rng = np.random.default_rng(1)
    E2 = np.ones_like(E)
    wins = rng.random(E.shape[::2]) < 0.4
    E2[np.arange(len(y)), 1 - y] += np.where(wins, 0.05, -0.01)
    pairs2 = classification.paired_table(E2, y, "toy", [51], n_boot=200)
    assert "**not supported**" in classification.voting_verdict(pairs2, full.loc["vote"], "toy")
    assert "**nominal (exploratory, look 2)**" in classification.voting_verdict(pairs, full.loc["vote"], "toy", look=2)
    short = classification.paired_table(E[:, :, :25], y, "toy", [25], n_boot=50)
    assert "not testable" in classification.voting_verdict(short, full.loc["vote"], "toy")
    chance = full.loc["vote"].copy()
    chance["auc_ci_low"] = 0.45
    assert "not testable" in classification.voting_verdict(pairs, chance, "toy")


def test_competitiveness_needs_signal_and_the_margin():
    base = {
        "task": "t",
        "source": "all",
        "a": "diffusion",
        "n_images": 100,
        "auc_diff": -0.01,
        "auc_diff_ci_low": -0.04,
        "auc_diff_ci_high": 0.02,
        "balanced_accuracy_diff": 0.0,
        "balanced_accuracy_diff_ci_low": -0.05,
        "balanced_accuracy_diff_ci_high": 0.05,
        "accuracy_diff": 0.0,
        "accuracy_diff_ci_low": -0.05,
        "accuracy_diff_ci_high": 0.05,
        "f1_diff": -0.1,
        "f1_diff_ci_low": -0.15,
        "f1_diff_ci_high": -0.05,
        "mcnemar_p": 0.9,
        "a_auc_ci_low": 0.8,
        "b_auc_ci_low": 0.8,
    }
    ok = classification.competitiveness_verdict(pd.DataFrame([base]), "t")[0]
    wide = classification.competitiveness_verdict(pd.DataFrame([{**base, "auc_diff_ci_low": -0.08}]), "t")[0]
    chance = classification.competitiveness_verdict(pd.DataFrame([{**base, "a_auc_ci_low": 0.45}]), "t")[0]
    assert "non-inferior in AUC at the margin" in ok and "is not shown" in wide and "not testable" in chance
    assert "F1 (the paper's metric) is significantly lower" in ok and "AUC is significantly lower" not in ok
    lower = classification.competitiveness_verdict(pd.DataFrame([{**base, "auc_diff_ci_high": -0.01}]), "t")[0]
    assert "AUC is significantly lower" in lower


def test_timestep_range_is_chosen_on_validation_only():
    """Test scores that favour another range must not change the choice made on validation."""
    E, U, y = planted_votes(n=120, k=25)
    noise = np.random.default_rng(3).random(E.shape)
    E_val = np.where((U < 1 / 3)[:, None, :], E, 1 + noise)  # only the first third carries signal on val
    E_test = np.where((U >= 2 / 3)[:, None, :], E, 1 + noise)  # only the last third on test
    rows = classification.val_selected_rows(E_val, U, y, E_test, U, y, "toy", "m", [[0, 1 / 3], [2 / 3, 1]], n_boot=20)
    # (planted_votes fools the mean rule on purpose, so only the vote carries the val signal)
    assert rows.set_index("rule").loc["vote", "t_range"] == "val-selected [0.00,0.33)"


def test_summary_reads_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("DC_RESULTS_DIR", str(tmp_path))
    (tmp_path / "tables").mkdir()
    pd.DataFrame([{"task": "t", "split": "test", "class": "a", "count": 3}]).to_csv(
        tmp_path / "tables" / "data_summary.csv", index=False
    )
    text = summary.details()
    assert "| t | test | a | 3 |" in text


def test_provenance_keeps_superseded_records_across_partial_runs(tmp_path, monkeypatch):
    import json
    import time

    from diffusion_classifier.report import provenance

    monkeypatch.setenv("DC_RESULTS_DIR", str(tmp_path))
    provenance.main(["start", "--profile", "smoke", "--tasks", "pneumonia"])
    provenance.main(["notebook", "02_train_diffusion", str(time.time() - 600)])
    provenance.main(["start", "--profile", "smoke", "--tasks", "pneumonia", "--keep"])
    provenance.main(["notebook", "02_train_diffusion", str(time.time() - 5)])
    provenance.main(["start", "--profile", "smoke", "--tasks", "pneumonia", "--keep"])  # another partial run
    rec = json.loads((tmp_path / "provenance.json").read_text())
    assert [n["name"] for n in rec["notebooks"]] == ["02_train_diffusion"] and rec["notebooks"][0]["wall_s"] < 60
    assert [n["wall_s"] >= 600 for n in rec["superseded"]] == [True]
    assert "from scratch: 10.0 min" in summary.build()


def test_deviations_table_matches_the_profiles():
    """Every setting the deviations table (docs/deviations.md) names holds in the profile of its column, every `paper`
    cell that is not fully the authors' setting has a reason, and the rows with a known detail of difference say
    so."""
    from diffusion_classifier.report import deviations

    table = deviations.rows()
    assert len(table) >= 15
    assert sum(len(deviations.named_values(r["cpu"] + r["paper"])) for r in table) >= 30
    assert deviations.mismatches(table) == []
    state = {r["what"]: deviations.state(r) for r in table}
    for what in ("input", "denoiser, UNet", "denoiser, DiT", "EMA", "checkpoint", "data, chest"):
        assert state[what] == deviations.EXCEPT, what
    assert state["target and loss"] == deviations.SAME
    assert state["augmentation"] == state["warm-up"] == deviations.DIFFERS
    assert set(state.values()) == {deviations.SAME, deviations.EXCEPT, deviations.DIFFERS}


def test_deviations_check_catches_a_wrong_setting_and_a_missing_reason(tmp_path):
    from diffusion_classifier.report import deviations

    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n## Deviations from the authors' code\n\n| what | authors | cpu | paper | why |\n|---|---|---|---|---|\n"
        "| input | Haar | pixels (`data.wavelet: haar`) | **= authors** (`data.wavelet: haar`) | — |\n"
        "| label dropout | 0.15 | 0.1 | 0.1 (`diffusion.label_dropout: 0.1`) | — |\n"
        "| typo | x | y | z (`train.no_such_key: 1`) | a reason |\n"
        "| EMA | 0.999 | 0.995 | **= authors** (`train.ema_decay: 0.999`) except the warm-up | a reason |\n"
        "| UNet | text token | one-hot | **= authors** in size; a one-hot instead of an embedding | a reason |\n"
        "| checkpoint | 50 epochs | final | **= authors except** the interval | — |\n"
        "| warm-up | 100 | 50 | **= authors except** 1000 steps (`train.warmup_steps: 1000`) | a reason |\n"
        "\n## Next\n"
    )
    table = deviations.rows(readme)
    found = deviations.mismatches(table)
    assert any("input (cpu)" in m and "'none'" in m for m in found)  # the cpu profile has no wavelet
    assert any("label dropout (paper)" in m and "0.15" in m for m in found)  # the paper profile has 0.15
    assert any("label dropout: the paper profile differs" in m for m in found)  # and no reason is given
    assert any("no_such_key" in m and "not a setting" in m for m in found)
    # "= authors" naming a difference must be "= authors except"; not fully "= authors" needs a reason
    assert any("EMA (paper)" in m and "'except'" in m and "= authors except" in m for m in found)
    assert any("UNet (paper)" in m and "'instead'" in m for m in found)
    assert any("checkpoint: the paper profile differs" in m and "no reason" in m for m in found)
    assert not any(m.startswith("warm-up") for m in found)  # marked, with a reason and a true setting
    assert len(found) == 7
    assert [deviations.state(r) for r in table] == [
        deviations.SAME,
        deviations.DIFFERS,
        deviations.DIFFERS,
        deviations.SAME,
        deviations.SAME,
        deviations.EXCEPT,
        deviations.EXCEPT,
    ]
    line = deviations.summary_line(table)
    assert "7 rows" in line and "fully in 3 (input; EMA; UNet)" in line
    assert "named detail in 2 (checkpoint; warm-up)" in line and "with a reason, in 2 (label dropout; typo)" in line

"""The source-shift test: paired AUC drops and their difference, on planted scores."""

import numpy as np
import pytest

from diffusion_classifier.analyses import shift


def test_drops_are_paired_and_signed():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    signal = y + rng.normal(0, 0.5, 200)  # AUC ~0.92
    noise = rng.normal(0, 1, 200)  # AUC ~0.5
    scores = {
        ("diffusion-unet", "in"): signal,
        ("diffusion-unet", "cross"): signal,  # no drop
        ("resnet18", "in"): signal,
        ("resnet18", "cross"): noise,
    }  # loses everything
    rows = {(r["family"], r["measure"]): r for r in shift.drop_table(y, scores, n_boot=300, seed=0)}
    assert rows[("diffusion-unet", "auc_drop")]["value"] == 0
    assert rows[("diffusion-unet", "auc_drop")]["ci_low"] == 0  # identical scores: every resample gives 0
    assert rows[("resnet18", "auc_drop")]["ci_low"] > 0.2
    gap = rows[("diffusion-unet - resnet18", "drop_difference")]
    assert gap["value"] == pytest.approx(-rows[("resnet18", "auc_drop")]["value"]) and gap["ci_high"] < 0
    text = shift.verdict(list(rows.values()), "isic2018", "isic2017")
    assert "loses less AUC under this change of training source" in text

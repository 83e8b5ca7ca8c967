"""Explanation maps: shapes, sign convention, reproducibility, faithfulness curves and the sanity check."""
import numpy as np
import pytest
import torch

from diffusion_classifier import explain
from diffusion_classifier.baseline import build_resnet18
from diffusion_classifier.scoring import ScoreSettings, ScoringEngine

S = dict(n_draws=4, batch_size=16, chunk_size=4, mixed_precision="no")


@pytest.fixture
def engine(tiny_model):
    return ScoringEngine(tiny_model, ScoreSettings(**S), "cpu")


@pytest.fixture
def x():
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_class_maps_shape_and_bit_identical_reruns(engine, x):
    a = explain.class_error_maps(engine, x, [0, 1, 2], 2, 4)
    b = explain.class_error_maps(engine, x, [0, 1, 2], 2, 4)
    assert a.shape == (3, 2, 8, 8) and (a >= 0).all()
    assert np.array_equal(a, b)


def test_maps_average_to_the_classification_errors(engine, x):
    """The maps come from the same draws: their pixel mean is exactly the engine's E averaged over draws."""
    maps = explain.class_error_maps(engine, x, [0, 1, 2], 2, 4)
    E = engine.score(x, 2).E
    np.testing.assert_allclose(maps.mean((2, 3)), E.mean(2), rtol=1e-5)


def test_difference_map_sign_convention():
    maps = np.zeros((1, 2, 2, 2), np.float32)
    maps[0, 0] = [[1.0, 1.0], [1.0, 1.0]]
    maps[0, 1] = [[0.0, 3.0], [1.0, 1.0]]
    d = explain.difference_maps(maps, np.array([0]))  # predicted 0, runner-up 1: D = e1 - e0
    assert d[0].tolist() == [[-1.0, 2.0], [0.0, 0.0]]  # positive where class 0 explains the pixel better


def test_counterfactuals_shapes(engine, x):
    cf = explain.counterfactuals(engine, x, [0, 1, 2], 2, t=0.5, ddim_steps=2)
    assert cf["one_step"].shape == (3, 2, 1, 8, 8) and cf["ddim"].shape == (3, 2, 1, 8, 8)
    assert np.abs(cf["one_step"]).max() <= 1


def test_deletion_curve_drops_when_the_evidence_is_removed():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, :2] = 1.0  # the only evidence: two bright pixels
    score = lambda xs: xs.flatten(1).sum(1).numpy()  # noqa: E731
    good = np.zeros((1, 4, 4)); good[0, 0, :2] = 1
    bad = 1 - good
    d_good = explain.perturbation_curve(score, x, good, 8, "deletion")
    d_bad = explain.perturbation_curve(score, x, bad, 8, "deletion")
    assert d_good[0, 0] == 2 and d_good[0, 1] == 0  # the first eighth (2 pixels) removes everything
    assert explain.curve_auc(d_good) < explain.curve_auc(d_bad)
    ins = explain.perturbation_curve(score, x, good, 8, "insertion")
    assert ins[0, 0] == 0 and ins[0, 1] == 2


def test_gradcam_and_randomisation_check(x):
    torch.manual_seed(0)
    net = build_resnet18(1, 2, 8)
    maps = explain.gradcam_maps(net, x)
    assert maps.shape == (3, 8, 8) and np.isfinite(maps).all()
    rho_same = explain.randomisation_check(maps, maps)
    assert np.allclose(rho_same[np.isfinite(rho_same)], 1.0)
    rho_rand = explain.randomisation_check(maps, explain.random_maps(maps.shape, 0))
    assert np.all(np.abs(rho_rand) < 0.5)


def test_pick_cases_is_seeded_and_correct():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    p = np.array([1, 0, 0, 1, 1, 0, 1, 1])
    a = explain.pick_cases(y, p, 2, seed=0)
    b = explain.pick_cases(y, p, 2, seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(y[i] == 1 and p[i] == 1 for i in a["TP"]) and all(y[i] == 1 and p[i] == 0 for i in a["FN"])

"""Explanation maps: shapes, sign conventions (planted-signal tests that fail if a sign flips), reproducibility,
counterfactuals, and the sampler."""

import numpy as np
import pytest
import torch
from point_mass import PointMassDenoiser

from diffusion_classifier import profiles
from diffusion_classifier.classifier import explain
from diffusion_classifier.classifier.engine import ScoreSettings, ScoringEngine
from diffusion_classifier.evaluation import faithfulness
from diffusion_classifier.models.sampling import ancestral, ddim, noise_like, start_time
from diffusion_classifier.models.schedules import build_schedule
from diffusion_classifier.models.stages import resnet_stages, unet_stages

S = dict(n_draws=4, batch_size=16, chunk_size=4, mixed_precision="no")
SIZE, PATCH = 16, (slice(4, 8), slice(8, 12))  # the planted 4x4 patch


@pytest.fixture
def engine(tiny_model):
    return ScoringEngine(tiny_model, ScoreSettings(**S), "cpu")


@pytest.fixture
def x():
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1


def planted_points() -> torch.Tensor:
    p = torch.full((2, 1, SIZE, SIZE), -0.5)
    p[1, 0, PATCH[0], PATCH[1]] = 0.8
    return p


def share_in_patch(maps: np.ndarray, k: int = 16) -> float:
    """Mean share of each map's top-k pixels that fall inside the planted patch."""
    inside = np.zeros((SIZE, SIZE), bool)
    inside[PATCH] = True
    top = np.argsort(-maps.reshape(len(maps), -1), axis=1)[:, :k]
    return float(inside.ravel()[top].mean())


# ----------------------------------------------------------------------------- diffusion maps


def test_class_maps_shape_and_bit_identical_reruns(engine, x):
    a = explain.class_error_maps(engine, x, [0, 1, 2], 2, 4)
    b = explain.class_error_maps(engine, x, [0, 1, 2], 2, 4)
    assert a.shape == (3, 2, 8, 8) and (a >= 0).all()
    assert np.array_equal(a, b)


def test_maps_average_to_the_classification_errors(engine, x):
    """The maps come from the classification's draws: their pixel mean is exactly the engine's E over draws."""
    maps = explain.class_error_maps(engine, x, [0, 1, 2], 2, 4)
    E = engine.score(x, 2).E
    np.testing.assert_allclose(maps.mean((2, 3)), E.mean(2), rtol=1e-5)


def test_disjoint_draws_give_other_maps(engine, x):
    a = explain.class_error_maps(engine, x, [0, 1, 2], 2, 2, first_draw=0)
    b = explain.class_error_maps(engine, x, [0, 1, 2], 2, 2, first_draw=2)
    assert not np.array_equal(a, b)


def test_difference_map_sign_convention():
    maps = np.zeros((1, 2, 2, 2), np.float32)
    maps[0, 0] = [[1.0, 1.0], [1.0, 1.0]]
    maps[0, 1] = [[0.0, 3.0], [1.0, 1.0]]
    d = explain.difference_maps(maps, np.array([0]))  # target 0, other 1: D = e1 - e0
    assert d[0].tolist() == [[-1.0, 2.0], [0.0, 0.0]]  # positive where class 0 explains the pixel better


def test_planted_patch_diffusion_map_points_at_the_patch():
    """Class evidence exists only inside the patch: the error-difference map for the true class must put its
    top pixels there; the sign-flipped map (e_target - e_other) must not (the test fails if the sign flips)."""
    points = planted_points()
    model = PointMassDenoiser(points)
    engine = ScoringEngine(model, ScoreSettings(**{**S, "n_draws": 8}), "cpu")
    x = points[[1, 1, 1]] + 0.05 * torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    maps = explain.class_error_maps(engine, x, [0, 1, 2], 2, 8, 0.1, 0.9)
    d = explain.difference_maps(maps, np.array([1, 1, 1]))
    assert share_in_patch(d) > 0.9
    assert share_in_patch(-d) < 0.1


def test_planted_patch_deletion_with_the_diffusion_judge():
    """Deleting the diffusion map's top patches removes the evidence faster than deleting random patches."""
    points = planted_points()
    model = PointMassDenoiser(points)
    x = points[[1, 1, 1, 1]] + 0.05 * torch.randn(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    judge = faithfulness.diffusion_judge(
        ScoringEngine(model, ScoreSettings(**{**S, "n_draws": 8, "seed": 9}), "cpu"), x, 2
    )
    assert (judge.target == 1).all()
    maps = explain.difference_maps(
        explain.class_error_maps(
            ScoringEngine(model, ScoreSettings(**{**S, "n_draws": 8}), "cpu"), x, range(4), 2, 8, 0.1, 0.9
        ),
        judge.target,
    )
    fill = faithfulness.fill_images(x, "grey", 4.0)
    auc = {
        name: faithfulness.curve_auc(faithfulness.perturbation_curve(judge.score, x, fill, m, 16, "deletion", 2))
        for name, m in {"map": maps, "flipped": -maps, "random": explain.random_maps(maps.shape, 0)}.items()
    }
    assert auc["map"].mean() < auc["random"].mean() < auc["flipped"].mean()
    assert (auc["map"] < auc["flipped"]).all()


# ----------------------------------------------------------------------------- Grad-CAM


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()
        )
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.features(x).amax((2, 3)))


def patch_images(n: int, seed: int):
    """Noise images; class 1 carries a bright 4x4 patch at the planted place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE, SIZE, generator=g) * 0.6 - 0.8
    y = torch.arange(n) % 2
    x[y == 1, 0, PATCH[0], PATCH[1]] = 0.9
    return x, y


@pytest.fixture(scope="module")
def patch_detector():
    torch.manual_seed(0)
    net = TinyCNN()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for step in range(150):
        x, y = patch_images(32, step)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = patch_images(64, 999)
    assert (net(x).argmax(1) == y).float().mean() > 0.95  # it did learn the patch
    return net.eval()


def test_gradcam_planted_patch_and_monai_default_flips_it(patch_detector):
    x, y = patch_images(16, 123)
    x = x[y == 1]
    cams = explain.gradcam_maps(patch_detector, x, np.ones(len(x), int), layer="features")
    assert cams.shape == (len(x), SIZE, SIZE) and cams.min() >= 0 and cams.max() <= 1
    assert share_in_patch(cams) > 0.7
    # MONAI's default post-processing maps (min, max) to (1, 0): the same map, flipped, misses the patch
    from monai.visualize import GradCAM

    flipped = GradCAM(nn_module=patch_detector, target_layers="features")(
        x, class_idx=torch.ones(len(x), dtype=torch.long)
    )
    assert share_in_patch(flipped.detach()[:, 0].numpy()) < 0.3


def test_gradcam_deletion_beats_random(patch_detector):
    x, y = patch_images(16, 321)
    x = x[y == 1]
    judge = faithfulness.resnet_judge(patch_detector, x)
    assert (judge.target == 1).all()
    cams = explain.gradcam_maps(patch_detector, x, judge.target, layer="features")
    fill = faithfulness.fill_images(x, "grey", 2.0)
    curve = lambda m: faithfulness.perturbation_curve(judge.score, x, fill, m, 16, "deletion", 2)  # noqa: E731
    d_cam, d_rand = (
        faithfulness.curve_auc(curve(cams)),
        faithfulness.curve_auc(curve(explain.random_maps(cams.shape, 0))),
    )
    assert d_cam.mean() < d_rand.mean()
    assert faithfulness.curve_auc(curve(1 - cams)).mean() > d_rand.mean()  # the flipped map deletes slowest


# ----------------------------------------------------------------------------- counterfactuals and sampler


def test_counterfactuals_shapes(engine, x):
    """Shapes and range, and both kinds depend on the class sent to. Catches: a zero (or class-blind) counterfactual."""
    cf = explain.counterfactuals(engine, x, [0, 1, 2], 2, t=0.5, steps=2, guidance_w=1.0)
    assert cf["one_step"].shape == (3, 2, 1, 8, 8) and cf["guided"].shape == (3, 2, 1, 8, 8)
    assert np.abs(cf["one_step"]).max() <= 1 and np.abs(cf["guided"]).max() <= 1
    for kind in ("one_step", "guided"):
        assert np.abs(cf[kind][:, 0] - cf[kind][:, 1]).mean() > 1e-3, kind


def test_one_step_counterfactual_of_a_point_mass_model_is_the_target_point():
    """The one-step x0 estimate of the exact point-mass eps-predictor: x0_hat = (x_t - s eps_hat_c) / a = p_c for any
    input and any t, so every image sent to class c becomes points[c]. Catches: a zero one-step counterfactual
    (np.zeros passed the old shape test), one read from the wrong class, or the input returned unchanged."""
    points = planted_points()
    engine = ScoringEngine(PointMassDenoiser(points), ScoreSettings(**S), "cpu")
    g = torch.Generator().manual_seed(3)
    x = torch.cat([points, (torch.rand(2, 1, SIZE, SIZE, generator=g) * 2 - 1)])  # the points and two noise images
    for t in (0.3, 0.7):
        one_step = explain.counterfactuals(engine, x, [0, 1, 2, 3], 2, t=t)["one_step"]
        assert one_step.shape == (4, 2, 1, SIZE, SIZE)
        for c in (0, 1):
            np.testing.assert_allclose(one_step[:, c], points[c].expand(4, -1, -1, -1).numpy(), atol=1e-4)


def test_counterfactual_of_a_point_mass_model_is_the_target_point():
    """Noised to t = 0.5 and sampled back towards class c, any input becomes the point of class c, and the
    paper's map (counterfactual - input) is nonzero only in the patch for a class-0 input sent to class 1."""
    points = planted_points()
    engine = ScoringEngine(PointMassDenoiser(points), ScoreSettings(**S), "cpu")
    cf = explain.counterfactuals(engine, points[[0]], [0], 2, t=0.5, steps=20)["guided"]
    np.testing.assert_allclose(cf[0], points.numpy(), atol=1e-4)
    m = explain.counterfactual_maps(points[[0]].numpy(), cf, np.array([1]))
    assert share_in_patch(np.abs(m), 16) == 1.0
    # guidance (the paper's w = 4.5) pushes further along cond - uncond: the patch overshoots class 1's value
    guided = explain.counterfactuals(engine, points[[0]], [0], 2, t=0.5, steps=20, guidance_w=4.5)["guided"]
    assert (guided[0, 1, 0][PATCH] > points[1, 0][PATCH].numpy()).all()


def test_sampler_starts_where_the_signal_is_measurable():
    cfg = profiles.get_profile("cpu", "pneumonia")
    model = PointMassDenoiser(planted_points())
    model.schedule = build_schedule(cfg)
    u = start_time(model, 1.0)
    a = float(model.schedule.alpha_sigma(torch.tensor([u]))[0])
    assert 0.04 <= a < 0.06 and u > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_samplers_return_the_point_of_a_trained_point_mass_model(sampler, tiny_cfg_point_mass):
    """A UNet trained on one image per class must sample that image for every starting noise (no pure-noise
    samples): the failure of earlier grids, where the first step started at alpha ~ 5e-5."""
    model, points = tiny_cfg_point_mass
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    noise = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    if sampler == "ddim":
        out = ddim(model, noise, labels, 1.0, 25)
    else:
        out = ancestral(model, noise, labels, 1.0, 25, seed=0)
    err = (out - points[labels]).abs().mean((1, 2, 3))
    assert (err < 0.3).all(), err  # pure-noise samples (the old DDIM step, eps rebuilt from the clip) are ~0.8 off
    pure_noise = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(6)).clamp(-1, 1)
    assert not noise_like(out, pure_noise * 0.5).any()  # smoother than even half-amplitude noise


@pytest.fixture(scope="module")
def tiny_cfg_point_mass():
    from conftest import tiny_cfg

    from diffusion_classifier.models.denoiser import Denoiser, build_unet
    from diffusion_classifier.training.diffusion import diffusion_loss

    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = Denoiser(build_unet(cfg, 1, 2), cfg, ["a", "b"])
    points = torch.full((2, 1, 8, 8), -0.6)
    points[1, 0, 2:6, 2:6] = 0.7
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        y = torch.randint(0, 2, (32,), generator=g)
        loss = diffusion_loss(model, points[y], y, g, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), points


# ----------------------------------------------------------------------------- faithfulness machinery


def test_patch_ranks_break_ties_at_random_not_in_raster_order():
    ranks = faithfulness.patch_ranks(np.zeros((2, 8, 8)), 2, seed=0)
    assert sorted(ranks[0].ravel()) == list(range(16))
    assert not np.array_equal(ranks[0].ravel(), np.arange(16))
    assert not np.array_equal(ranks[0], ranks[1])


def test_normalised_curves_run_from_one_to_zero():
    x = torch.zeros(2, 1, 4, 4)
    x[:, 0, 0, :2] = 1.0
    score = lambda xs: xs.flatten(1).sum(1).numpy() + 3.0  # noqa: E731  (an offset the normalisation removes)
    sal = np.zeros((2, 4, 4))
    sal[:, 0, :2] = 1
    fill = torch.zeros_like(x)
    d = faithfulness.perturbation_curve(score, x, fill, sal, 8, "deletion")
    n = faithfulness.normalise(d, score(x), score(fill))
    assert np.allclose(n[:, 0], 1) and np.allclose(n[:, 1:], 0)
    ins = faithfulness.normalise(
        faithfulness.perturbation_curve(score, x, fill, sal, 8, "insertion"), score(x), score(fill)
    )
    assert np.allclose(ins[:, 0], 0) and np.allclose(ins[:, 1:], 1)


def test_paired_summary_is_the_mean_difference():
    a, b = np.array([0.2, 0.4, 0.6]), np.array([0.1, 0.1, 0.1])
    s = faithfulness.paired_summary(a, b, 200, 0)
    assert s["value"] == pytest.approx(0.3) and s["ci_low"] <= 0.3 <= s["ci_high"]


def test_cascade_covers_every_parameter(tiny_model):
    from diffusion_classifier.models.resnet import build_resnet18

    for net, stages in (
        (tiny_model.unet, unet_stages),
        (build_resnet18(1, 2, 16), resnet_stages),
    ):
        covered = {id(p) for _, mods in stages(net) for m in mods for p in m.parameters()}
        assert covered == {id(p) for p in net.parameters()}


def test_cascading_randomisation_flags_a_map_that_ignores_the_model(tiny_model, x):
    """An input-only map (edges) keeps rho = 1 at every stage: the check can fail. A model-dependent map drops."""
    edges = lambda model: np.abs(np.diff(x[:, 0].numpy(), axis=-1, append=0))  # noqa: E731
    trained = edges(tiny_model)
    rows = faithfulness.cascading_randomisation(tiny_model.unet, unet_stages, lambda m: edges(m), trained, 0)
    assert all(np.allclose(r["rho"], 1) for r in rows)
    engine = ScoringEngine(tiny_model, ScoreSettings(**S), "cpu")

    def diffusion_map(unet):
        tiny_model_copy = type(tiny_model)(unet, tiny_model.cfg, tiny_model.class_names).eval()
        e = ScoringEngine(tiny_model_copy, engine.settings, "cpu")
        return explain.difference_maps(explain.class_error_maps(e, x, [0, 1, 2], 2, 4), np.zeros(3, int))

    trained = diffusion_map(tiny_model.unet)
    rows = faithfulness.cascading_randomisation(tiny_model.unet, unet_stages, diffusion_map, trained, 0)
    assert np.nanmean(rows[-1]["rho"]) < 0.9


def test_flip_rates_hand_computed():
    pred = np.array([0, 0, 1, 1])
    pred_cf = np.array([[0, 1], [0, 1], [0, 1], [1, 1]])  # predictions on the counterfactuals towards class 0, 1
    rows = faithfulness.flip_rates(pred, pred_cf, 2)
    assert rows[0]["flip_rate"] == 0.5 and rows[0]["keep_rate"] == 1.0  # towards 0: images 2, 3 give 0, 1
    assert rows[1]["flip_rate"] == 1.0 and rows[1]["keep_rate"] == 1.0  # towards 1: images 0, 1 give 1, 1


def test_pick_cases_is_seeded_and_correct():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    p = np.array([1, 0, 0, 1, 1, 0, 1, 1])
    a = explain.pick_cases(y, p, 2, seed=0)
    b = explain.pick_cases(y, p, 2, seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(y[i] == 1 and p[i] == 1 for i in a["TP"]) and all(y[i] == 1 and p[i] == 0 for i in a["FN"])


def test_gradcam_of_a_mixed_batch_equals_one_image_at_a_time(patch_detector):
    """MONAI scores logits[:, class_idx]; a per-image index would make that a B x B matrix and mix the targets."""
    x, _ = patch_images(6, 77)
    targets = np.array([0, 1, 1, 0, 1, 1])
    batched = explain.gradcam_maps(patch_detector, x, targets, layer="features")
    alone = np.concatenate(
        [explain.gradcam_maps(patch_detector, x[[i]], targets[[i]], layer="features") for i in range(len(x))]
    )
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_normalisation_keeps_the_order_of_methods_when_the_gap_is_negative():
    """A judge that scores the all-fill image above the clean one must not reverse which map deletes faster."""
    s_x, s_fill = np.array([0.0, 0.0]), np.array([1.0, 1.0])  # gap -1
    fast = np.array([[0.0, 0.9, 1.0], [0.0, 0.9, 1.0]])
    slow = np.array([[0.0, 0.1, 1.0], [0.0, 0.1, 1.0]])
    a = faithfulness.curve_auc(faithfulness.normalise(fast, s_x, s_fill))
    b = faithfulness.curve_auc(faithfulness.normalise(slow, s_x, s_fill))
    assert np.all(a > b) == np.all(faithfulness.curve_auc(fast) > faithfulness.curve_auc(slow))


def test_verdict_directions_and_uninterpretable_judges():
    import pandas as pd

    from diffusion_classifier.analyses import explanations as ex

    def row(mode, value, lo, hi):
        return pd.Series({"mode": mode, "value": value, "ci_low": lo, "ci_high": hi, "versus": "random"})

    assert ex.compare_phrase(row("deletion", -0.2, -0.3, -0.1), "deletion").startswith("more faithful")
    assert ex.compare_phrase(row("insertion", -0.2, -0.3, -0.1), "insertion").startswith("less faithful")
    assert ex.compare_phrase(row("deletion", 0.1, -0.1, 0.3), "deletion").startswith("not distinguishable")
    base = {"task": "t", "section": "faithfulness", "judge": "resnet18", "fill": "grey", "n_images": 64}
    table = pd.DataFrame(
        [
            {
                **base,
                "method": "(all)",
                "measure": "score_gap",
                "value": 0.01,
                "ci_low": -0.02,
                "ci_high": 0.04,
                "interpretable": False,
            },
            {
                **base,
                "method": ex.DIFFUSION_MAP,
                "mode": "deletion",
                "measure": "auc_minus_random",
                "value": -0.3,
                "ci_low": -0.4,
                "ci_high": -0.2,
                "versus": "random",
                "judge_relation": "other model",
                "interpretable": False,
            },
        ]
    )
    text = " ".join(ex.verdicts(table, "t"))
    assert "NOT INTERPRETABLE" in text and "more faithful" not in text

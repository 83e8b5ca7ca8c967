"""Faithfulness end to end: `faithfulness.faithfulness_rows` on a planted judge and planted maps with the grey and
the blur fill (hand-derived AUCs), the blur fill itself, and `explanations.evaluate` on an exact point-mass
denoiser whose class evidence lies in one known patch.

The planted judge reads one quadrant of each 8 x 8 image (the decisive region, a bright square on a black
background); with 4 x 4 patches an image has 4 patches and, with steps = 4, one patch goes per step. A map that
ranks the decisive patch r-th (0 = first) keeps the clean score for the first r deletions and the all-fill score
after, so its normalised deletion curve is r + 1 ones then zeros and its area (trapezoid, fraction step 1/4) is
0.125 + 0.25 r; the insertion area is 1 - that. Every expected value below follows from this.
"""

import numpy as np
import point_mass
import pytest
import torch

from diffusion_classifier import profiles
from diffusion_classifier.analyses import explanations
from diffusion_classifier.classifier import explain
from diffusion_classifier.classifier.engine import ScoreSettings, ScoringEngine
from diffusion_classifier.evaluation import faithfulness
from diffusion_classifier.models.resnet import build_resnet18

SIZE, PATCH, STEPS = 8, 4, 4
QUADRANT = [0, 1, 2, 3, 0, 3]  # each image's decisive quadrant (row-major over the 2 x 2 patch grid)
RANDOM_RANK = [1, 2, 3, 2, 1, 3]  # the rank of the decisive patch in the planted "random" map (mean 2)


def quadrant_slices(q: int):
    r, c = divmod(q, 2)
    return slice(r * PATCH, (r + 1) * PATCH), slice(c * PATCH, (c + 1) * PATCH)


def planted_images() -> torch.Tensor:
    x = torch.zeros(len(QUADRANT), 1, SIZE, SIZE)
    for i, q in enumerate(QUADRANT):
        rows, cols = quadrant_slices(q)
        x[i, 0, rows, cols] = 1.0
    return x


def planted_judge() -> faithfulness.Judge:
    """Evidence = the mean of the image over its decisive quadrant (1 on the clean image)."""

    def score(xs):
        return np.array([float(xs[i, 0][quadrant_slices(q)].mean()) for i, q in enumerate(QUADRANT)])

    return faithfulness.Judge("planted", score, np.ones(len(QUADRANT), int))


def planted_maps() -> dict:
    true = np.zeros((len(QUADRANT), SIZE, SIZE), np.float32)
    rand = np.zeros_like(true)
    for i, (q, r) in enumerate(zip(QUADRANT, RANDOM_RANK)):
        true[i][quadrant_slices(q)] = 1.0
        values = [v for v in (3.0, 2.0, 1.0, 0.0) if v != 3 - r]  # the other quadrants, in any order
        for p in range(4):
            rand[i][quadrant_slices(p)] = 3.0 - r if p == q else values.pop()
    return {"true": true, "flipped": -true, "random": rand}


def deletion_area(rank) -> np.ndarray:
    return 0.125 + 0.25 * np.asarray(rank, float)


@pytest.fixture(scope="module")
def planted_rows():
    x, judge, maps = planted_images(), planted_judge(), planted_maps()
    rows, curves = faithfulness.faithfulness_rows(
        [judge],
        lambda j: maps,
        x,
        {"planted": ["grey", "blur"]},
        STEPS,
        PATCH,
        n_boot=200,
        seed=0,
        reference="random",
        rivals={"true": "flipped"},
        own_judge={"true": "planted"},
    )
    return x, judge, rows, curves


def pick(rows, **where):
    found = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]


@pytest.mark.parametrize("fill", ["grey", "blur"])
def test_planted_judge_and_maps_give_the_hand_derived_areas(planted_rows, fill):
    """Catches: the map's sign flipped in the patch ranking (`means` for `-means`: the true map then deletes its
    decisive patch last, 0.875); deletion and insertion swapped; the fill not applied (the blur returning the image:
    gap 0, not interpretable, every curve 0); the blur replaced by the grey fill (gap 1); curves not shifted by the
    all-fill score; a wrong reference or rival in the paired rows."""
    x, judge, rows, curves = planted_rows
    # the clean - all-fill gap: grey fill -> 0 in the quadrant, gap 1; blur fill -> a blurred square that keeps part
    # of its brightness (0 < gap < 1), the same for every quadrant by symmetry, so the CI collapses on the value
    gap = pick(rows, fill=fill, measure="score_gap")
    blurred = faithfulness.fill_images(x, "blur", sigma=float(PATCH))
    want_gap = 1.0 if fill == "grey" else 1.0 - float(blurred[0, 0][quadrant_slices(QUADRANT[0])].mean())
    assert gap["value"] == pytest.approx(want_gap, abs=1e-6)
    assert gap["ci_low"] == pytest.approx(want_gap, abs=1e-6) and gap["ci_high"] == pytest.approx(want_gap, abs=1e-6)
    assert gap["interpretable"] is True
    if fill == "blur":
        assert 0.05 < gap["value"] < 0.95  # neither the image itself nor the grey fill

    r = np.asarray(RANDOM_RANK, float)
    want = {
        ("deletion", "true"): 0.125,
        ("deletion", "flipped"): 0.875,
        ("deletion", "random"): deletion_area(r).mean(),  # 0.625
        ("insertion", "true"): 0.875,
        ("insertion", "flipped"): 0.125,
        ("insertion", "random"): (1 - deletion_area(r)).mean(),  # 0.375
    }
    for (mode, method), value in want.items():
        row = pick(rows, fill=fill, mode=mode, method=method, measure="normalised_auc")
        assert row["value"] == pytest.approx(value, abs=1e-6), (fill, mode, method)
        assert row["interpretable"] is True and row["n_images"] == len(QUADRANT)
        assert row["judge_relation"] == ("own model" if method == "true" else "")

    # paired differences to the random map, per image: true - random = -0.25 r in deletion (all < 0), +0.25 r in
    # insertion; flipped - random = 0.75 - 0.25 r in deletion (>= 0)
    d = pick(rows, fill=fill, mode="deletion", method="true", measure="auc_minus_random")
    assert d["versus"] == "random" and d["value"] == pytest.approx(-0.5, abs=1e-6)
    assert -0.75 - 1e-6 <= d["ci_low"] <= d["ci_high"] <= -0.25 + 1e-6
    i = pick(rows, fill=fill, mode="insertion", method="true", measure="auc_minus_random")
    assert i["value"] == pytest.approx(0.5, abs=1e-6) and i["ci_low"] >= 0.25 - 1e-6
    f = pick(rows, fill=fill, mode="deletion", method="flipped", measure="auc_minus_random")
    assert f["value"] == pytest.approx(0.25, abs=1e-6) and f["ci_low"] >= -1e-6
    # the rival (the flipped map) differs by exactly 0.75 on every image
    rv = pick(rows, fill=fill, mode="deletion", method="true", measure="auc_minus_rival")
    assert rv["versus"] == "flipped"
    assert rv["value"] == rv["ci_low"] == rv["ci_high"] == pytest.approx(-0.75, abs=1e-6)
    assert pick(rows, fill=fill, mode="insertion", method="true", measure="auc_minus_rival")["value"] == pytest.approx(
        0.75, abs=1e-6
    )

    # the mean normalised curves: the true map drops at the first step; the random map after each image's rank
    np.testing.assert_allclose(curves[("planted", fill, "deletion", "true")], [1, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(
        curves[("planted", fill, "deletion", "random")], [(k <= r).mean() for k in range(5)], atol=1e-6
    )
    np.testing.assert_allclose(curves[("planted", fill, "insertion", "true")], [0, 1, 1, 1, 1], atol=1e-6)


def test_blur_fill_is_a_gaussian_of_the_patch_size():
    """The blur fill of a point is a symmetric bump of total mass 1 and variance sigma^2 (+1/12 from MONAI's
    integrated 'erf' kernel). Catches: the blur returning the image (variance 0), the grey fill (mass 0), another
    sigma, or a one-axis blur."""
    x = torch.zeros(1, 1, 41, 41)
    x[0, 0, 20, 20] = 1.0
    for sigma in (2.0, 3.0):
        b = faithfulness.fill_images(x, "blur", sigma)[0, 0].double().numpy()
        assert b.sum() == pytest.approx(1.0, abs=1e-3)
        np.testing.assert_allclose(b, b.T, atol=1e-7)
        np.testing.assert_allclose(b, b[::-1, ::-1], atol=1e-7)
        offsets = np.arange(41) - 20
        var_rows = float((b.sum(1) * offsets**2).sum() / b.sum())
        var_cols = float((b.sum(0) * offsets**2).sum() / b.sum())
        for v in (var_rows, var_cols):
            assert v == pytest.approx(sigma**2 + 1 / 12, rel=0.03)
    with pytest.raises(ValueError):
        faithfulness.fill_images(x, "noise", 1.0)


# ----------------------------------------------------------------------------- explanations.evaluate


E2E_SIZE, E2E_PATCH = 16, (slice(4, 8), slice(8, 12))  # one whole 4 x 4 patch of the 4 x 4 grid


class PointMassDenoiser(point_mass.PointMassDenoiser):
    """The exact eps-predictor of `point_mass`, with `class_names` as a Denoiser, and `stages` and
    `reset_parameters` for the cascading randomisation."""

    class_names = ["normal", "pneumonia"]

    def reset_parameters(self):
        with torch.no_grad():
            self.points.copy_(torch.rand_like(self.points) * 2 - 1)

    def stages(self):
        return [("points", [self])]


def test_explainability_evaluate_with_a_planted_patch():
    """All class evidence lies in one patch, so the diffusion map's top patch is that patch: under the diffusion
    judge with the blur fill (the smoke profile's only fill for that judge), deleting it drops the evidence to the
    all-fill level at the first step (normalised deletion AUC 0.125, insertion 0.875, exactly) and beats the random
    map. Catches: the difference map's sign flipped (`explain.difference_maps`: deletion AUC 0.875); the blur fill
    not applied (gap 0: not interpretable); the maps made for other targets than the judge's."""
    torch.manual_seed(0)
    points = torch.full((2, 1, E2E_SIZE, E2E_SIZE), -0.5)
    points[1, 0, E2E_PATCH[0], E2E_PATCH[1]] = 0.8
    model = PointMassDenoiser(points)
    x = points[[1] * 8] + 0.05 * torch.randn(8, 1, E2E_SIZE, E2E_SIZE, generator=torch.Generator().manual_seed(1))
    resnet = build_resnet18(1, 2, E2E_SIZE).eval()
    cfg = profiles.get_profile("smoke", "pneumonia", {"scoring": {"mixed_precision": "no"}})
    assert cfg["explain"]["fills"]["diffusion"] == ["blur"] and cfg["explain"]["patches_per_side"] == 4

    rows, curves, extras = explanations.evaluate(cfg, model, resnet, x, seed=0)

    faith = [r for r in rows if r["section"] == "faithfulness"]
    assert {(r["judge"], r["fill"]) for r in faith} == {
        ("diffusion", "blur"),
        ("resnet18", "grey"),
        ("resnet18", "blur"),
    }
    gap = pick(faith, judge="diffusion", fill="blur", measure="score_gap")
    assert gap["interpretable"] is True and gap["ci_low"] > 0

    dm = explanations.DIFFUSION_MAP
    at = dict(judge="diffusion", fill="blur", method=dm)
    dm_del = pick(faith, **at, mode="deletion", measure="normalised_auc")["value"]
    assert dm_del == pytest.approx(0.125, abs=1e-4)
    assert pick(faith, **at, mode="insertion", measure="normalised_auc")["value"] == pytest.approx(0.875, abs=1e-4)
    rand_del = pick(faith, judge="diffusion", fill="blur", method="random", mode="deletion", measure="normalised_auc")
    minus = pick(faith, **at, mode="deletion", measure="auc_minus_random")
    assert minus["value"] == pytest.approx(dm_del - rand_del["value"], abs=1e-9) and rand_del["value"] > 0.3
    assert minus["ci_high"] < 0 and pick(faith, **at, mode="insertion", measure="auc_minus_random")["ci_low"] > 0
    assert pick(faith, **at, mode="deletion", measure="normalised_auc")["judge_relation"] == "own model"
    np.testing.assert_allclose(curves[("diffusion", "blur", "deletion", dm)], [1, 0, 0, 0, 0], atol=1e-4)

    # the other sections ran on the same images
    sections = {r["section"] for r in rows}
    assert sections == {"faithfulness", "randomisation", "test_retest", "counterfactual"}
    assert {r["method"] for r in rows if r["section"] == "randomisation"} == {dm, explanations.GRADCAM}
    assert len(extras["test_retest"]) == len(x)
    # the two disjoint-draw maps of an exact model agree on the patch: every image's top patch is the planted one
    maps = explain.difference_maps(
        explain.class_error_maps(
            ScoringEngine(model, ScoreSettings.from_profile(cfg, n_draws=8)),
            x,
            np.arange(len(x)),
            2,
            4,
            cfg["explain"]["t_min"],
            cfg["explain"]["t_max"],
        ),
        np.ones(len(x), int),
    )
    ranks = faithfulness.patch_ranks(maps, 4, 0)
    assert (ranks[:, 1, 2] == 0).all()

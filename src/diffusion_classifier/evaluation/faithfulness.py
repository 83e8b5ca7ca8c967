"""Are the explanation maps faithful? Perturbation curves judged by independent classifiers, and sanity checks
that can fail.

Judges. A judge is a classifier's continuous evidence for a target class (its own prediction on the clean image):
    diffusion  min over other classes of the mean error minus the target's mean error, over `judge_draws` draws
               with a seed of its own, so the judge never re-uses the (t, eps) draws that made a diffusion map
    resnet18   the ResNet's logit of the target minus the largest other logit (log-odds; softmax saturates)
Every map is computed for the judge's target class, so under each judge all methods explain the same decision.

The judges are independent of the maps' draws, not of the maps' models: under the diffusion judge the diffusion
map is judged by its own denoiser and Grad-CAM by another model, under the ResNet judge the reverse. Each
row says which (`judge_relation`), and a comparison of the two map families is read under both.

Curves. Patches (p x p) are ranked by their mean saliency (ties broken at random, seeded, so a constant map is not
deleted in raster order), deleted from the image (replaced by the fill) or inserted into the all-fill image, in
`steps` equal steps. Fills: grey (0) or the image blurred (a Gaussian of sigma = patch size), which keeps
"random" deletion near the data. Per image the curve is shifted so that the all-fill image scores 0, and all
curves of a judge are divided by the size of the judge's mean gap |clean - all-fill| over the images, so the clean
image scores about 1. (A per-image scale would divide by near-zero gaps.) Both endpoints are the same for every
method, so paired differences between methods keep the sign of the raw-score differences; only their unit
changes. The gap itself is a row (`score_gap`, with its CI): where its CI contains 0 the judge barely tells the
clean image from the all-fill image, and that judge's curves are marked not interpretable.
Low deletion AUC and high insertion AUC = faithful. Comparisons are paired per image, with bootstrap CIs; there is
no correction for the number of comparisons.

Sanity checks (Adebayo et al. 2018): cascading randomisation re-initialises the model from the output layer
down, one stage at a time, and reports the Spearman correlation of |map| with the trained model's |map| (it must
fall); test-retest correlates two diffusion maps made from disjoint draws (noise maps correlate little).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.layers import GaussianFilter
from scipy.stats import spearmanr

from ..classifier import rules
from ..classifier.engine import ScoringEngine
from ..core import seeds
from .metrics import bootstrap

FILLS = ("grey", "blur")


@dataclass
class Judge:
    name: str
    score: Callable[[torch.Tensor], np.ndarray]  # images (n, C, H, W) -> (n,) evidence for the target
    target: np.ndarray  # (n,) the class the judge predicts on the clean images


def diffusion_judge(engine: ScoringEngine, x: torch.Tensor, n_classes: int) -> Judge:
    """The diffusion classifier as a judge. `engine` carries the judge's own seed and draws; the image ids are
    the positions 0..n-1, so every perturbed version of image j sees the same draws (paired curves)."""
    ids = np.arange(len(x))

    def mean_errors(xs):
        E, _ = engine.score_images(engine.encode(xs), ids, n_classes)
        return np.nanmean(E, axis=2)

    target = mean_errors(x).argmin(1)

    def score(xs):
        m = mean_errors(xs)
        own = m[ids, target]
        m[ids, target] = np.inf
        return m.min(1) - own

    return Judge("diffusion", score, target)


def resnet_judge(model: torch.nn.Module, x: torch.Tensor) -> Judge:
    @torch.no_grad()
    def logits(xs):
        model.eval()
        return torch.cat([model(b).float() for b in xs.split(256)]).numpy()

    target = logits(x).argmax(1)
    ids = np.arange(len(x))

    def score(xs):
        z = logits(xs)
        own = z[ids, target].copy()
        z[ids, target] = -np.inf
        return own - z.max(1)

    return Judge("resnet18", score, target)


# ----------------------------------------------------------------------------- perturbation curves


def fill_images(x: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    if kind == "grey":
        return torch.zeros_like(x)
    if kind == "blur":
        return GaussianFilter(spatial_dims=2, sigma=sigma)(x)
    raise ValueError(f"fill must be one of {FILLS}, got {kind!r}")


def patch_ranks(saliency: np.ndarray, patch: int, seed: int) -> np.ndarray:
    """(n, H/p, W/p) rank of each patch, 0 = most salient; ties broken at random (seeded)."""
    n, h, w = saliency.shape
    means = saliency.reshape(n, h // patch, patch, w // patch, patch).mean((2, 4)).reshape(n, -1)
    tie = np.random.default_rng(seed).random(means.shape)
    order = np.lexsort((tie, -means), axis=1)  # by -saliency, then by the random key
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(means.shape[1])[None].repeat(n, 0), axis=1)
    return ranks.reshape(n, h // patch, w // patch)


def perturbation_curve(
    score_fn,
    x: torch.Tensor,
    fill: torch.Tensor,
    saliency: np.ndarray,
    steps: int,
    mode: str,
    patch: int = 1,
    seed: int = 0,
    ends: tuple | None = None,
) -> np.ndarray:
    """Scores (n, steps + 1) as the most salient patches are deleted (mode 'deletion': replaced by `fill`) or
    inserted (mode 'insertion': into `fill`), a fraction 0, 1/steps, ..., 1 of the patches at a time.
    `ends` = (score of x, score of fill) saves re-scoring the endpoints, which no map changes."""
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be deletion or insertion, got {mode!r}")
    ranks = torch.from_numpy(patch_ranks(saliency, patch, seed))
    ranks = ranks.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None]  # (n, 1, H, W)
    n_patches = (x.shape[-1] // patch) * (x.shape[-2] // patch)
    s_x, s_fill = ends if ends is not None else (score_fn(x), score_fn(fill))
    curves = []
    for s in range(steps + 1):
        k = round(s / steps * n_patches)
        if k == 0 or k == n_patches:
            untouched = (k == 0) == (mode == "deletion")
            curves.append(np.asarray(s_x if untouched else s_fill, dtype=float))
            continue
        chosen = ranks < k
        keep = ~chosen if mode == "deletion" else chosen
        curves.append(np.asarray(score_fn(torch.where(keep, x, fill)), dtype=float))
    return np.stack(curves, 1)


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve over the fraction axis [0, 1] (trapezoid)."""
    f = np.linspace(0, 1, curves.shape[1])
    return np.trapezoid(curves, f, axis=1)


def normalise(curves: np.ndarray, s_x: np.ndarray, s_fill: np.ndarray) -> np.ndarray:
    """Shift each image's curve so its all-fill image scores 0; divide by the size of the mean gap |clean -
    all-fill| (a positive unit, so the order of methods is the order of their raw-score curves)."""
    gap = abs(float(np.mean(s_x - s_fill)))
    return (curves - s_fill[:, None]) / (gap if gap > 1e-12 else 1.0)


def paired_summary(a: np.ndarray, b: np.ndarray | None, n_boot: int, seed: int) -> dict:
    """Mean of a, and of the per-image difference a - b, with percentile-bootstrap CIs over the same images."""
    d = a if b is None else a - b
    ci = bootstrap(lambda u: {"m": u.mean()}, (d,), n_boot, seed)["m"]
    return {"value": float(d.mean()), "ci_low": ci[0], "ci_high": ci[1]}


def faithfulness_rows(
    judges: list,
    maps_for: Callable,
    x: torch.Tensor,
    fills: dict,
    steps: int,
    patch: int,
    n_boot: int,
    seed: int,
    reference: str = "random",
    rivals: dict | None = None,
    own_judge: dict | None = None,
) -> tuple:
    """Long-format rows: per judge, fill, mode and method the normalised AUC, and the paired differences to the
    `reference` map (random) and to each method's rival (`rivals[method]`, e.g. Grad-CAM for the diffusion map).
    `maps_for(judge) -> {method: (n, H, W)}` gives the maps for the judge's targets; `fills[judge.name]` lists its
    fills; `own_judge[method]` names the judge that is the map's own model. Returns (rows, mean normalised curves
    keyed by (judge, fill, mode, method))."""
    rows, mean_curves = [], {}
    for judge in judges:
        maps = maps_for(judge)
        for fill_kind in fills[judge.name]:
            fill = fill_images(x, fill_kind, sigma=float(patch))
            ends = (judge.score(x), judge.score(fill))
            gap = paired_summary(ends[0], ends[1], n_boot, seed)
            interpretable = bool(gap["ci_low"] > 0)
            rows.append(
                {
                    "judge": judge.name,
                    "fill": fill_kind,
                    "method": "(all)",
                    "measure": "score_gap",
                    "n_images": len(x),
                    "interpretable": interpretable,
                    **gap,
                }
            )
            for mode in ("deletion", "insertion"):
                auc = {}
                for method, saliency in maps.items():
                    c = normalise(
                        perturbation_curve(judge.score, x, fill, saliency, steps, mode, patch, seed, ends), *ends
                    )
                    auc[method] = curve_auc(c)
                    mean_curves[(judge.name, fill_kind, mode, method)] = c.mean(0)
                for method in maps:
                    relation = (
                        ""
                        if method not in (own_judge or {})
                        else "own model"
                        if own_judge[method] == judge.name
                        else "other model"
                    )
                    base = {
                        "judge": judge.name,
                        "fill": fill_kind,
                        "mode": mode,
                        "method": method,
                        "judge_relation": relation,
                        "n_images": len(x),
                        "interpretable": interpretable,
                    }
                    rows.append(
                        {**base, "measure": "normalised_auc", **paired_summary(auc[method], None, n_boot, seed)}
                    )
                    for other, label in ((reference, "minus_random"), ((rivals or {}).get(method), "minus_rival")):
                        if other is not None and other != method and other in auc:
                            rows.append(
                                {
                                    **base,
                                    "measure": f"auc_{label}",
                                    "versus": other,
                                    **paired_summary(auc[method], auc[other], n_boot, seed),
                                }
                            )
    return rows, mean_curves


# ----------------------------------------------------------------------------- sanity checks


def spearman_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (NaN where a map is constant: callers count those)."""
    out = []
    for u, v in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
        out.append(np.nan if u.std() == 0 or v.std() == 0 else spearmanr(u, v).statistic)
    return np.array(out)


def reinitialise(modules, seed: int):
    """Fresh default initialisation of every sub-module that has one (convolutions, linear layers, norms)."""
    torch.manual_seed(seed)
    for module in modules:
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def cascading_randomisation(
    model: torch.nn.Module, stages_of: Callable, map_fn: Callable, trained: np.ndarray, seed: int
) -> list[dict]:
    """Re-initialise `stages_of(copy)` cumulatively from the top; after each stage, the per-image Spearman of
    |map_fn(copy)| against |trained|. Rows: stage index, stage name, per-image correlations."""
    randomised = copy.deepcopy(model)
    rows = []
    for i, (name, modules) in enumerate(stages_of(randomised)):
        reinitialise(modules, seeds.stage_seed(seed, i))
        rho = spearman_per_image(np.abs(map_fn(randomised)), np.abs(trained))
        rows.append({"stage": i + 1, "stage_name": name, "rho": rho})
    return rows


def flip_rates(pred_original: np.ndarray, pred_counterfactual: np.ndarray, n_classes: int) -> list[dict]:
    """Per target class c: among images not predicted c, the share whose counterfactual towards c is predicted c
    (flip rate); among images predicted c, the share whose counterfactual towards c stays c (keep rate).
    pred_counterfactual: (n, C), the prediction on the counterfactual towards each class."""
    rows = []
    for c in range(n_classes):
        away, towards = pred_original != c, pred_original == c
        rows.append(
            {
                "target": c,
                "flip_rate": float((pred_counterfactual[away, c] == c).mean()) if away.any() else np.nan,
                "n_flip": int(away.sum()),
                "keep_rate": float((pred_counterfactual[towards, c] == c).mean()) if towards.any() else np.nan,
                "n_keep": int(towards.sum()),
            }
        )
    return rows


def predict_with(judge_engine: ScoringEngine, x: torch.Tensor, n_classes: int, rule: str) -> np.ndarray:
    """A decision of the diffusion classifier on new images (e.g. counterfactuals) with the judge's draws."""
    E, _ = judge_engine.score_images(judge_engine.encode(x), np.arange(len(x)), n_classes)
    return rules.predict(E, rule)

"""Explanations for free, and a measure of whether they are faithful.

Error maps come out of the engine's own seeded draws (the same (t, eps) that decided the classification):
    error-difference map  D = mean over draws of (e_runner-up - e_predicted) per pixel; D > 0 where the predicted
                          class explains the pixel better (evidence for the decision), D < 0 against it
    counterfactuals       the one-step x0 estimate under each class at a chosen t, and a short DDIM path from x_t
Comparison: Grad-CAM on the ResNet-18 baseline (MONAI). Faithfulness: deletion / insertion curves (most salient
pixels first, re-scored by the classifier's own score) and the model-randomisation sanity check.
"""
import numpy as np
import torch
from scipy.stats import spearmanr

from . import decision
from .sampling import ddim
from .scoring import ScoringEngine, draw_noise, draw_time


def _draws_in_range(engine: ScoringEngine, image_ids, n_draws, t_min, t_max):
    """Per image, the indices of its first n_draws draws whose time falls in [t_min, t_max)."""
    return [[k for k in range(n_draws) if t_min <= draw_time(engine.s, int(i), k) < t_max] or [0]
            for i in image_ids]


def class_error_maps(engine: ScoringEngine, x: torch.Tensor, image_ids, n_classes: int, n_draws: int,
                     t_min: float = 0.0, t_max: float = 1.0) -> np.ndarray:
    """(n, C, H, W) per-pixel squared eps error per class, averaged over the image's draws in the range."""
    z0 = engine.encode(x)
    draws = _draws_in_range(engine, image_ids, n_draws, t_min, t_max)
    ks = [[k for k in d for _ in range(n_classes)] for d in draws]
    cs = [[c for _ in d for c in range(n_classes)] for d in draws]
    flat = engine.pixel_errors(z0, image_ids, ks, cs, reduce=False).numpy()
    out, pos = np.zeros((len(x), n_classes, *flat.shape[1:]), dtype=np.float32), 0
    for j, d in enumerate(draws):
        block = flat[pos:pos + len(d) * n_classes].reshape(len(d), n_classes, *flat.shape[1:])
        out[j] = block.mean(0)
        pos += len(d) * n_classes
    return out


def difference_maps(class_maps: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Signed (n, H, W) map e_runner-up - e_predicted (runner-up: the other class with the lowest total error)."""
    n = len(class_maps)
    totals = class_maps.reshape(n, class_maps.shape[1], -1).mean(2)
    totals[np.arange(n), predicted] = np.inf
    runner = totals.argmin(1)
    return class_maps[np.arange(n), runner] - class_maps[np.arange(n), predicted]


@torch.no_grad()
def counterfactuals(engine: ScoringEngine, x: torch.Tensor, image_ids, n_classes: int, t: float,
                    ddim_steps: int = 0) -> dict:
    """x0 estimates under each class from x_t at time t (noise = the image's draw 0). Returns arrays
    (n, C, channels, H, W) in [-1, 1]: 'one_step' and, with ddim_steps > 0, 'ddim'."""
    model, sched = engine.model, engine.model.schedule
    z0 = engine.encode(x)
    eps = torch.stack([draw_noise(engine.s, int(i), 0, z0.shape[1:]) for i in image_ids])
    u = torch.full((len(x),), float(t))
    x_t = sched.add_noise(z0, eps, u).to(engine.device)
    out = {"one_step": [], "ddim": []}
    for c in range(n_classes):
        labels = torch.full((len(x),), c, device=engine.device)
        pred = model.predict(x_t, u.to(engine.device), labels).float()
        out["one_step"].append(model.decode(sched.eps_and_x0(pred, x_t, u.to(engine.device))[1].clamp(-1, 1)).cpu())
        if ddim_steps:
            out["ddim"].append(model.decode(ddim(model, x_t, labels, t, ddim_steps)).cpu())
    return {k: torch.stack(v, 1).numpy() for k, v in out.items() if v}


def gradcam_maps(model: torch.nn.Module, x: torch.Tensor, class_idx=None, layer: str = "layer4") -> np.ndarray:
    """Grad-CAM (MONAI) of a CNN, upsampled to the input size: (n, H, W) in [0, 1]."""
    from monai.visualize import GradCAM

    model.eval()
    cam = GradCAM(nn_module=model, target_layers=layer)
    maps = []
    for b in range(0, len(x), 64):
        xb = x[b:b + 64].clone().requires_grad_(True)
        idx = None if class_idx is None else torch.as_tensor(class_idx[b:b + 64])
        with torch.enable_grad():
            maps.append(cam(xb, class_idx=idx).detach()[:, 0].cpu().numpy())
    return np.concatenate(maps)


def random_maps(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ----------------------------------------------------------------------------- faithfulness

def perturbation_curve(score_fn, x: torch.Tensor, saliency: np.ndarray, steps: int, mode: str,
                       fill: float = 0.0) -> np.ndarray:
    """Scores (n, steps + 1) as the most salient pixels are deleted (replaced by `fill`) or inserted (into an
    all-`fill` image), in fractions 0, 1/steps, ..., 1 of the pixels. `score_fn(x) -> (n,)`."""
    n, _, h, w = x.shape
    order = np.argsort(-saliency.reshape(n, -1), axis=1, kind="stable")  # most salient first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None].repeat(n, 0), axis=1)
    rank = torch.from_numpy(rank.reshape(n, 1, h, w))
    curves = []
    for s in range(steps + 1):
        top = rank < round(s / steps * h * w)  # (n, 1, H, W): the pixels among the first s/steps
        keep = ~top if mode == "deletion" else top
        xs = torch.where(keep, x, torch.full_like(x, fill))
        curves.append(np.asarray(score_fn(xs)))
    return np.stack(curves, 1)


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve over the fraction axis [0, 1] (trapezoid)."""
    f = np.linspace(0, 1, curves.shape[1])
    return np.trapezoid(curves, f, axis=1) if hasattr(np, "trapezoid") else np.trapz(curves, f, axis=1)


def diffusion_score_fn(engine: ScoringEngine, image_ids, target: np.ndarray, n_classes: int):
    """The diffusion classifier's own score for class `target`: its vote fraction over the engine's draws, on the
    same seeded draws for every perturbed version of an image (so the curves are paired)."""
    def score(x):
        E, _ = engine._score_images(engine.encode(x), image_ids, n_classes)
        return decision.class_scores(E, "vote")[np.arange(len(x)), target]
    return score


def baseline_score_fn(model: torch.nn.Module, target: np.ndarray):
    @torch.no_grad()
    def score(x):
        model.eval()
        p = torch.softmax(model(x).float(), 1).numpy()
        return p[np.arange(len(x)), target]
    return score


def randomisation_check(maps_trained: np.ndarray, maps_random: np.ndarray) -> np.ndarray:
    """Per-image Spearman rank correlation between maps of the trained and a re-initialised model (|rho| near 0
    means the maps depend on what the model learned, as they must)."""
    return np.array([spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(maps_trained, maps_random)])


def pick_cases(y: np.ndarray, pred: np.ndarray, per_case: int, seed: int) -> dict:
    """Indices of true/false positives/negatives, `per_case` each, drawn by a seeded rule (not hand-picked)."""
    rng = np.random.default_rng(seed)
    kinds = {"TP": (y == 1) & (pred == 1), "TN": (y == 0) & (pred == 0),
             "FP": (y == 0) & (pred == 1), "FN": (y == 1) & (pred == 0)}
    return {k: np.sort(rng.choice(np.flatnonzero(m), min(per_case, m.sum()), replace=False)) for k, m in kinds.items()}

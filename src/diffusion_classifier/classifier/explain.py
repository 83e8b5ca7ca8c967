"""Explanations for free: the maps and counterfactuals themselves (how faithful they are: `faithfulness.py`).

error-difference map  D = mean over draws of (e_other - e_target) per pixel, for a target class (by default
                      the predicted one): D > 0 where the target class explains the pixel better (evidence for
                      it), D < 0 against it. Draws are the engine's own seeded (t, eps) draws.
counterfactuals       as in the authors' explain.py: noise the image to t (0.5), then guided ancestral sampling
                      back to 0 towards each class (w = 4.5 in the paper); the paper's map is counterfactual
                      minus input. The one-step x0 estimate under each class is shown beside it.
Grad-CAM              on the ResNet-18 baseline (MONAI), with a plain min-max post-processing: MONAI's default
                      `default_normalizer` maps (min, max) to (1, 0) and so flips every map.
"""

import numpy as np
import torch
from monai.visualize import GradCAM

from ..core.seeds import derive
from ..models.resnet import predict_proba
from ..models.sampling import ancestral
from .engine import ScoringEngine, draw_noise, draw_time


def draws_in_range(engine: ScoringEngine, image_ids, draws: range, t_min: float, t_max: float) -> list[list[int]]:
    """Per image, the draw indices in `draws` whose time falls in [t_min, t_max) (at least the first one)."""
    return [
        [k for k in draws if t_min <= draw_time(engine.settings, int(i), k) < t_max] or [draws[0]] for i in image_ids
    ]


def class_error_maps(
    engine: ScoringEngine,
    x: torch.Tensor,
    image_ids,
    n_classes: int,
    n_draws: int,
    t_min: float = 0.0,
    t_max: float = 1.0,
    first_draw: int = 0,
) -> np.ndarray:
    """(n, C, H, W) per-pixel squared eps error per class, averaged over the image's draws first_draw ...
    first_draw + n_draws - 1 whose time falls in [t_min, t_max). Disjoint draw ranges give independent maps."""
    z0 = engine.encode(x)
    todo = np.zeros((len(x), n_classes, first_draw + n_draws), dtype=bool)
    for j, d in enumerate(draws_in_range(engine, image_ids, range(first_draw, first_draw + n_draws), t_min, t_max)):
        todo[j, :, d] = True
    maps = engine.mean_error_maps(z0, image_ids, todo)
    # maps come in the space the diffusion runs in: a model on a transform of the image (Haar) puts them back on its
    # pixels (Denoiser.map_to_image); Stable Diffusion's stay at latent resolution
    to_image = getattr(engine.model, "map_to_image", None)
    return maps if to_image is None else to_image(maps)


def difference_maps(class_maps: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Signed (n, H, W) map e_other - e_target, `other` being the non-target class with the lowest total error."""
    n = len(class_maps)
    totals = class_maps.reshape(n, class_maps.shape[1], -1).mean(2)
    totals[np.arange(n), target] = np.inf
    other = totals.argmin(1)
    return class_maps[np.arange(n), other] - class_maps[np.arange(n), target]


def minmax_per_image(cams: torch.Tensor) -> torch.Tensor:
    """Scale each map of a (B, 1, H, W) batch to [0, 1] keeping its order (a constant map becomes 0)."""
    flat = cams.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp(min=1e-12)).view_as(cams)


def gradcam_maps(model: torch.nn.Module, x: torch.Tensor, class_idx=None, layer: str = "layer4") -> np.ndarray:
    """Grad-CAM (MONAI) of a CNN for class_idx (default: its prediction), upsampled to the input: (n, H, W) in
    [0, 1], 1 = most important."""
    model.eval()
    if class_idx is None:
        class_idx = predict_proba(model, x).argmax(1)
    class_idx = np.asarray(class_idx)
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=minmax_per_image)
    maps = np.zeros((len(x), *x.shape[-2:]), dtype=np.float32)
    # MONAI scores logits[:, class_idx]: with one index per image that is a B x B matrix whose sum mixes every
    # image's target into every map, so the images of each class go through Grad-CAM with one integer index
    for c in np.unique(class_idx):
        rows = np.flatnonzero(class_idx == c)
        for b in range(0, len(rows), 64):
            part = rows[b : b + 64]
            xb = x[part].clone().requires_grad_(True)
            with torch.enable_grad():
                maps[part] = cam(xb, class_idx=int(c)).detach()[:, 0].float().cpu().numpy()
    return maps


def random_maps(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@torch.no_grad()
def counterfactuals(
    engine: ScoringEngine,
    x: torch.Tensor,
    image_ids,
    n_classes: int,
    t: float,
    steps: int = 0,
    guidance_w: float = 0.0,
    seed: int = 0,
) -> dict:
    """Reconstructions of each image towards each class from x_t at time t (noise = the image's draw 0).
    Returns arrays (n, C, channels, H, W) in [-1, 1]: 'one_step' (x0 estimate in one step, unguided) and, with
    steps > 0, 'guided' (ancestral sampling with guidance w, seeded: the authors' counterfactual)."""
    model, sched = engine.model, engine.model.schedule
    z0 = engine.encode(x)
    eps = torch.stack([draw_noise(engine.settings, int(i), 0, z0.shape[1:]) for i in image_ids])
    u = torch.full((len(x),), float(t), device=engine.device)
    x_t = sched.add_noise(z0.to(engine.device), eps.to(engine.device), u)
    out = {"one_step": [], "guided": []}
    for c in range(n_classes):
        labels = torch.full((len(x),), c, device=engine.device)
        pred = model.predict(x_t, u, labels).float()
        out["one_step"].append(model.decode(sched.eps_and_x0(pred, x_t, u)[1].clamp(-1, 1)).cpu())
        if steps:
            guided = ancestral(model, x_t, labels, t, steps, guidance_w, seed=derive(seed, "counterfactual", c))
            out["guided"].append(model.decode(guided).cpu())
    return {k: torch.stack(v, 1).numpy() for k, v in out.items() if v}


def counterfactual_maps(x: np.ndarray, cf: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The paper's map: counterfactual towards `target` minus the input, summed over channels: (n, H, W)."""
    return (cf[np.arange(len(x)), target] - x).sum(1)


def pick_cases(y: np.ndarray, pred: np.ndarray, per_case: int, seed: int) -> dict:
    """Indices of true/false positives/negatives, `per_case` each, drawn by a seeded rule (not hand-picked)."""
    rng = np.random.default_rng(seed)
    kinds = {
        "TP": (y == 1) & (pred == 1),
        "TN": (y == 0) & (pred == 0),
        "FP": (y == 0) & (pred == 1),
        "FN": (y == 1) & (pred == 0),
    }
    return {k: np.sort(rng.choice(np.flatnonzero(m), min(per_case, m.sum()), replace=False)) for k, m in kinds.items()}

"""Deterministic DDIM sampling (eta = 0) written against `NoiseSchedule`, so one sampler serves the discrete
and the continuous schedule: x_s = alpha_s * x0_hat + sigma_s * eps_hat. Optional classifier-free guidance
through the null label. Used for the sample grids (what the model learned) and the DDIM counterfactuals."""
import torch

from .denoiser import Denoiser


@torch.no_grad()
def ddim(model: Denoiser, x_t: torch.Tensor, labels: torch.Tensor, u_start: float = 1.0, steps: int = 50,
         guidance_scale: float = 1.0) -> torch.Tensor:
    """Run DDIM from time u_start down to 0 and return x0 (in the model's space, clipped to [-1, 1])."""
    n = x_t.shape[0]
    grid = torch.linspace(u_start, 0.0, steps + 1)
    grid[0] = min(u_start, 1 - 1e-4)
    x = x_t
    null = torch.full_like(labels, model.null_label)
    for u_now, u_next in zip(grid[:-1], grid[1:]):
        u = torch.full((n,), float(u_now), device=x.device)
        pred = model.predict(x, u, labels).float()
        if guidance_scale != 1.0:
            pred_u = model.predict(x, u, null).float()
            pred = pred_u + guidance_scale * (pred - pred_u)
        eps, x0 = model.schedule.eps_and_x0(pred, x, u)
        x0 = x0.clamp(-1, 1)
        if float(u_next) <= 0:
            return x0
        a_now, s_now = model.schedule.alpha_sigma(u)
        eps = (x - model.schedule._bcast(a_now, x) * x0) / model.schedule._bcast(s_now, x)  # consistent with the clip
        a, s = model.schedule.alpha_sigma(torch.full((n,), float(u_next), device=x.device))
        x = model.schedule._bcast(a, x0) * x0 + model.schedule._bcast(s, x0) * eps
    return x0


@torch.no_grad()
def sample(model: Denoiser, labels: torch.Tensor, shape, steps: int = 50, seed: int = 0,
           guidance_scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(labels), *shape), generator=g)
    return ddim(model, x, labels, 1.0, steps, guidance_scale)

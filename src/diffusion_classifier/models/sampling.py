"""Samplers written against `NoiseSchedule`, so one loop serves the discrete and the continuous schedule:
    ddim       deterministic DDIM (eta = 0): x_s = alpha_s * x0_hat + sigma_s * eps_hat
    ancestral  DDPM ancestral sampling: x_s ~ q(x_s | x_t, x0_hat), the sampler of the authors' counterfactuals
Both take classifier-free guidance in the paper's convention, pred = (1 + w) * cond - w * uncond (w = 0: none).

x0_hat is clipped to [-1, 1] but the step keeps the network's own eps_hat (as diffusers' DDIMScheduler does).
Recomputing eps from the clipped x0 ("consistent with the clip") was the cause of the pure-noise samples in
earlier grids: at high noise the clipped x0 is a random +-1 pattern, and an eps rebuilt from it carries that
pattern down every step (measured on the pneumonia model: 7 of 64 DDIM samples were noise with the rebuilt eps,
none with the network's eps). The first step also starts at the largest time whose signal level alpha is at least
`MIN_START_ALPHA` (t ~ 980 of 1000 for the cosine schedule, like diffusers' "leading" spacing): at u -> 1,
alpha ~ 5e-5 and x0_hat multiplies the network's error by ~2e4.

Even so, the deterministic DDIM path of the fully trained `cpu` pneumonia model still ends in noise for some
starting noises (12 of 64 seeds, measured by `noise_like`), while ancestral sampling from the same noises gives
none (0 of 64): its fresh noise at every step pulls a trajectory back towards the data. The sample grids therefore
use the ancestral sampler (`sampling.sampler`), the authors' sampler for counterfactuals too.
"""

import torch

from .denoiser import Denoiser

MIN_START_ALPHA = 0.04


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))


def start_time(model: Denoiser, u_start: float) -> float:
    """The largest u <= u_start with alpha(u) >= MIN_START_ALPHA (bisection; alpha decreases in u)."""
    alpha = lambda u: float(model.schedule.alpha_sigma(torch.tensor([u]))[0])  # noqa: E731
    if alpha(u_start) >= MIN_START_ALPHA:
        return u_start
    lo, hi = 0.0, u_start
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if alpha(mid) >= MIN_START_ALPHA else (lo, mid)
    return lo


def guided_x0(model: Denoiser, x: torch.Tensor, u: float, labels: torch.Tensor, guidance_w: float):
    """(eps_hat, x0_hat clipped to [-1, 1]) at time u, with classifier-free guidance weight w."""
    t = torch.full((len(x),), float(u), device=x.device)
    pred = model.predict(x, t, labels).float()
    if guidance_w:
        uncond = model.predict(x, t, torch.full_like(labels, model.null_label)).float()
        pred = (1 + guidance_w) * pred - guidance_w * uncond
    eps, x0 = model.schedule.eps_and_x0(pred, x, t)
    return eps, x0.clamp(-1, 1)


def time_grid(model: Denoiser, u_start: float, steps: int) -> list[float]:
    """steps + 1 evenly spaced times from the sampler's start (see start_time) down to 0."""
    return torch.linspace(start_time(model, u_start), 0.0, steps + 1).tolist()


@torch.no_grad()
def ddim(
    model: Denoiser,
    x_t: torch.Tensor,
    labels: torch.Tensor,
    u_start: float = 1.0,
    steps: int = 50,
    guidance_w: float = 0.0,
) -> torch.Tensor:
    """Deterministic DDIM from time u_start down to 0; returns x0 (model space, clipped to [-1, 1])."""
    grid = time_grid(model, u_start, steps)
    x = x_t
    for u_now, u_next in zip(grid[:-1], grid[1:]):
        eps, x0 = guided_x0(model, x, u_now, labels, guidance_w)
        if u_next <= 0:
            return x0
        a, s = model.schedule.alpha_sigma(torch.full((len(x),), u_next))
        x = _bcast(a, x0) * x0 + _bcast(s, x0) * eps
    return x0


@torch.no_grad()
def ancestral(
    model: Denoiser,
    x_t: torch.Tensor,
    labels: torch.Tensor,
    u_start: float,
    steps: int,
    guidance_w: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """DDPM ancestral sampling from u_start to 0: each step draws x_s from the Gaussian posterior
    q(x_s | x_t, x0_hat) of the variance-preserving process (mean and variance below), seeded."""
    g = torch.Generator().manual_seed(seed)
    grid = time_grid(model, u_start, steps)
    x = x_t
    for u_now, u_next in zip(grid[:-1], grid[1:]):
        _, x0 = guided_x0(model, x, u_now, labels, guidance_w)
        if u_next <= 0:
            return x0
        n = len(x)
        a_t, s_t = model.schedule.alpha_sigma(torch.full((n,), u_now))
        a_s, s_s = model.schedule.alpha_sigma(torch.full((n,), u_next))
        a_ts = a_t / a_s  # alpha of the step s -> t
        var_ts = (s_t**2 - a_ts**2 * s_s**2).clamp(min=0)
        mean = _bcast(a_ts * s_s**2 / s_t**2, x) * x + _bcast(a_s * var_ts / s_t**2, x) * x0
        std = (var_ts * s_s**2 / s_t**2).sqrt()
        x = mean + _bcast(std, x) * torch.randn(x.shape, generator=g).to(x.device)
    return x0


SAMPLERS = ("ancestral", "ddim")


@torch.no_grad()
def sample_from(
    model: Denoiser,
    noise: torch.Tensor,
    labels: torch.Tensor,
    sampler: str = "ancestral",
    steps: int = 50,
    guidance_w: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Images sampled from the pure noise `noise` (time 1: standard Gaussian, in image shape) with the named
    sampler. A model on Haar coefficients samples in that space from the same noise carried there, and its samples
    come back as images (Denoiser.noise_to_model, decode: the identity for a pixel-space model)."""
    x_t = model.noise_to_model(noise)
    if sampler == "ancestral":
        return model.decode(ancestral(model, x_t, labels, 1.0, steps, guidance_w, seed))
    if sampler == "ddim":
        return model.decode(ddim(model, x_t, labels, 1.0, steps, guidance_w))
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def roughness(x: torch.Tensor) -> torch.Tensor:
    """(n,) mean absolute difference of horizontally neighbouring pixels: ~0.07 for chest X-rays at 32 px, ~0.6
    for Gaussian noise clipped to [-1, 1]."""
    return (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(1)


def noise_like(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(n,) True for samples rougher than every reference (training) image: a sample that is pure noise."""
    return roughness(samples) > roughness(reference).max()

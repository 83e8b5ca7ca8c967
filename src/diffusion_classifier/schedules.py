"""Noise schedules, kept apart from the loops that use them (as in diffusers).

Both schedules are addressed by a continuous time u in [0, 1) so that every loop (training, scoring,
explanation, sampling) draws and stores the same kind of number:
    DiscreteSchedule      DDPM betas from diffusers' DDPMScheduler; u -> integer step floor(u * T)
    ShiftedCosineSchedule continuous log-SNR(u) = -2 log tan(pi u / 2) + 2 log(noise_d / image_d)
                          ("simple diffusion", Hoogeboom et al. 2023), the authors' schedule
x_t = alpha * x0 + sigma * eps, and the model predicts eps, v = alpha * eps - sigma * x0, or x0.
"""

import math

import torch
from diffusers import DDPMScheduler

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class NoiseSchedule:
    prediction_type = "epsilon"

    def alpha_sigma(self, u: torch.Tensor):
        raise NotImplementedError

    def model_time(self, u: torch.Tensor) -> torch.Tensor:
        """The time value fed to the network's timestep embedding."""
        raise NotImplementedError

    def snr(self, u):
        a, s = self.alpha_sigma(u)
        return (a / s) ** 2

    @staticmethod
    def _bcast(v, x):
        return v.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def add_noise(self, x0, eps, u):
        a, s = self.alpha_sigma(u)
        return self._bcast(a, x0) * x0 + self._bcast(s, x0) * eps

    def target(self, x0, eps, u):
        if self.prediction_type == "epsilon":
            return eps
        a, s = self.alpha_sigma(u)
        a, s = self._bcast(a, x0), self._bcast(s, x0)
        return a * eps - s * x0 if self.prediction_type == "v_prediction" else x0

    def eps_and_x0(self, pred, x_t, u):
        """Recover (eps_hat, x0_hat) from any prediction type; scoring always compares in eps space."""
        a, s = self.alpha_sigma(u)
        a, s = self._bcast(a, x_t), self._bcast(s, x_t)
        if self.prediction_type == "epsilon":
            eps = pred
            x0 = (x_t - s * eps) / a
        elif self.prediction_type == "v_prediction":
            eps = s * x_t + a * pred
            x0 = a * x_t - s * pred
        else:
            x0 = pred
            eps = (x_t - a * x0) / s
        return eps, x0

    def loss_weight(self, u, kind: str, gamma: float = 5.0):
        """Per-sample weight of the MSE on the prediction target. min_snr: Hang et al. 2023."""
        if kind == "none":
            return torch.ones_like(u, dtype=torch.float32)
        snr = self.snr(u).float()
        clipped = snr.clamp(max=gamma)
        return {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[self.prediction_type]


class DiscreteSchedule(NoiseSchedule):
    def __init__(self, num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", **betas):
        sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, **betas)
        self.alphas_cumprod = sched.alphas_cumprod.double()
        self.T = num_train_timesteps
        self.prediction_type = prediction_type

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "DiscreteSchedule":
        """From a diffusers scheduler config (e.g. a Stable Diffusion folder's scheduler/)."""
        return cls(
            config.get("num_train_timesteps", 1000),
            config.get("beta_schedule", "linear"),
            config.get("prediction_type", "epsilon"),
            beta_start=config.get("beta_start", 0.0001),
            beta_end=config.get("beta_end", 0.02),
        )

    def step(self, u):
        return (u.double() * self.T).floor().clamp(0, self.T - 1).long()

    def alpha_sigma(self, u):
        ac = self.alphas_cumprod[self.step(u.cpu())]
        return ac.sqrt().float().to(u.device), (1 - ac).sqrt().float().to(u.device)

    def model_time(self, u):
        return self.step(u)


class ShiftedCosineSchedule(NoiseSchedule):
    def __init__(self, image_d=64, noise_d=64, prediction_type="v_prediction", logsnr_min=-15.0, logsnr_max=15.0):
        self.shift = 2 * math.log(noise_d / image_d)
        self.prediction_type = prediction_type
        # u is mapped into [u_min, u_max] so that the unshifted log-SNR stays inside [logsnr_min, logsnr_max].
        self.u_min = math.atan(math.exp(-0.5 * logsnr_max)) * 2 / math.pi
        self.u_max = math.atan(math.exp(-0.5 * logsnr_min)) * 2 / math.pi

    def logsnr(self, u):
        u = self.u_min + u.double() * (self.u_max - self.u_min)
        return -2 * torch.log(torch.tan(math.pi * u / 2)) + self.shift

    def alpha_sigma(self, u):
        lam = self.logsnr(u)
        return torch.sigmoid(lam).sqrt().float(), torch.sigmoid(-lam).sqrt().float()

    def model_time(self, u):
        # The network sees the time scaled to the same [0, 1000) range as the discrete schedule.
        return (u.float() * 1000).to(u.device)


def build_schedule(cfg: dict) -> NoiseSchedule:
    """From the `diffusion` section of a profile (plus the resolution for the shifted cosine)."""
    d = cfg["diffusion"]
    if d["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {d['prediction_type']!r}")
    if d["schedule"] == "ddpm":
        return DiscreteSchedule(d["num_train_timesteps"], d["beta_schedule"], d["prediction_type"])
    if d["schedule"] == "shifted_cosine":
        return ShiftedCosineSchedule(cfg["data"]["resolution"], d["noise_d"], d["prediction_type"])
    raise ValueError(f"unknown schedule {d['schedule']!r}: use 'ddpm' or 'shifted_cosine'")

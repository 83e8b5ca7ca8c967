"""Noise schedules, kept apart from the loops that use them (as in diffusers).

Both schedules are addressed by a continuous time u in [0, 1) so that every loop (training, scoring,
explanation, sampling) draws and stores the same kind of number:
    DiscreteSchedule      DDPM betas from diffusers' DDPMScheduler; u -> integer step floor(u * T)
    ShiftedCosineSchedule continuous log-SNR(u) = -2 log tan(pi u / 2) + 2 log(noise_d / image_d)
                          ("simple diffusion", Hoogeboom et al. 2023), the authors' schedule
x_t = alpha * x0 + sigma * eps, and the model predicts eps, v = alpha * eps - sigma * x0, or x0.

The authors' options (METHOD.md, "Models"), each a setting of the profile's `diffusion` section whose default keeps
the behaviour the smoke and cpu checkpoints were trained with:
    time_input   "scaled": the network's time embedding sees the step (discrete) or u * 1000 (continuous);
                 "logsnr": it sees the log-SNR lambda(u) itself, as in the authors' code
    logsnr_clip  "unshifted": u is mapped into [u_min, u_max] so that the log-SNR *before* the shift stays inside
                 [logsnr_min, logsnr_max]; "shifted": the authors' code first moves those bounds by
                 log(noise_d / image_d) (half the output shift), so with r = noise_d / image_d
                     t_min = atan(exp(-(logsnr_max + log r) / 2)),  t_max = atan(exp(-(logsnr_min + log r) / 2))
                     lambda(u) = -2 log tan(t_min + u (t_max - t_min)) + 2 log r
                 which at r = 64 / 256 and bounds +-15 gives lambda(0) = 15 - 3 log 4 = +10.84,
                 lambda(0.5) = -2.77, lambda(1) = -15 - 3 log 4 = -19.16 (METHOD.md: +10.8, -2.77, -19.2)
    loss_weighting "none" | "min_snr" (Hang et al. 2023, on the prediction target) | "authors": the loss in eps
                 space, ||eps_hat - eps||^2 weighted by 1 / (1 + min(SNR, gamma)), gamma = min_snr_gamma (5);
                 defined for prediction_type "v_prediction" only (the authors'), any other raises ValueError
"""

import math

import torch
from diffusers import DDPMScheduler

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIME_INPUTS = ("scaled", "logsnr")
LOGSNR_CLIPS = ("unshifted", "shifted")
LOSS_WEIGHTINGS = ("none", "min_snr", "authors")


def check_loss_weighting(kind: str, prediction_type: str):
    """The setting pair is one the loss is defined for: "authors" is the authors' weighting for their v-prediction
    only (their code weights eps-prediction differently, 1 / min(SNR, gamma), which is not reproduced here)."""
    if kind not in LOSS_WEIGHTINGS:
        raise ValueError(f"diffusion.loss_weighting must be one of {LOSS_WEIGHTINGS}, got {kind!r}")
    if kind == "authors" and prediction_type != "v_prediction":
        raise ValueError(
            f"diffusion.loss_weighting 'authors' is defined for diffusion.prediction_type 'v_prediction' only "
            f"(the authors' weighting of their v-prediction), got prediction_type {prediction_type!r}; "
            f"use v_prediction, or loss_weighting 'none' or 'min_snr'"
        )


class NoiseSchedule:
    prediction_type = "epsilon"
    time_input = "scaled"

    def alpha_sigma(self, u: torch.Tensor):
        raise NotImplementedError

    def logsnr(self, u: torch.Tensor) -> torch.Tensor:
        """log(alpha^2 / sigma^2) at u."""
        raise NotImplementedError

    def scaled_time(self, u: torch.Tensor) -> torch.Tensor:
        """The schedule's own time scale, [0, 1000) for both schedules."""
        raise NotImplementedError

    def model_time(self, u: torch.Tensor) -> torch.Tensor:
        """The time value fed to the network's timestep embedding (see `time_input` in the module docstring)."""
        if self.time_input == "logsnr":
            return self.logsnr(u).float().to(u.device)
        return self.scaled_time(u)

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

    def loss_residual(self, pred, x0, eps, x_t, u, kind: str) -> torch.Tensor:
        """What the training loss squares: the error on the prediction target, or for "authors" the error in eps
        space (the quantity the classifier scores), whatever the network predicts."""
        if kind == "authors":
            return self.eps_and_x0(pred, x_t, u)[0] - eps
        return pred - self.target(x0, eps, u)

    def loss_weight(self, u, kind: str, gamma: float = 5.0):
        """Per-sample weight of the squared `loss_residual`.

        min_snr (Hang et al. 2023): min(SNR, gamma) expressed on the prediction target.
        authors: 1 / (1 + min(SNR, gamma)) on the eps-space error, as the authors' code does for v-prediction; for
        eps-prediction their code uses 1 / min(SNR, gamma) instead (unused in the paper; not reproduced here), so
        any other prediction type raises ValueError (`check_loss_weighting`)."""
        check_loss_weighting(kind, self.prediction_type)
        if kind == "none":
            return torch.ones_like(u, dtype=torch.float32)
        snr = self.snr(u).float()
        clipped = snr.clamp(max=gamma)
        if kind == "authors":
            return 1 / (1 + clipped)
        return {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[self.prediction_type]


class DiscreteSchedule(NoiseSchedule):
    def __init__(
        self,
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        time_input="scaled",
        **betas,
    ):
        sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, **betas)
        self.alphas_cumprod = sched.alphas_cumprod.double()
        self.T = num_train_timesteps
        self.prediction_type = prediction_type
        self.time_input = time_input

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

    def logsnr(self, u):
        ac = self.alphas_cumprod[self.step(u.cpu())]
        return (torch.log(ac) - torch.log1p(-ac)).to(u.device)

    def scaled_time(self, u):
        return self.step(u)


class ShiftedCosineSchedule(NoiseSchedule):
    def __init__(
        self,
        image_d=64,
        noise_d=64,
        prediction_type="v_prediction",
        logsnr_min=-15.0,
        logsnr_max=15.0,
        logsnr_clip="unshifted",
        time_input="scaled",
    ):
        self.shift = 2 * math.log(noise_d / image_d)
        self.prediction_type = prediction_type
        self.time_input = time_input
        # u is mapped into [u_min, u_max] so that the log-SNR before the shift stays inside the clip bounds:
        # [logsnr_min, logsnr_max] ("unshifted"), or those bounds moved by log(noise_d / image_d) as in the
        # authors' code ("shifted"; adding 0.0 leaves the unshifted bounds bit-for-bit as they were)
        offset = math.log(noise_d / image_d) if logsnr_clip == "shifted" else 0.0
        self.u_min = math.atan(math.exp(-0.5 * (logsnr_max + offset))) * 2 / math.pi
        self.u_max = math.atan(math.exp(-0.5 * (logsnr_min + offset))) * 2 / math.pi

    def logsnr(self, u):
        u = self.u_min + u.double() * (self.u_max - self.u_min)
        return -2 * torch.log(torch.tan(math.pi * u / 2)) + self.shift

    def alpha_sigma(self, u):
        lam = self.logsnr(u)
        return torch.sigmoid(lam).sqrt().float(), torch.sigmoid(-lam).sqrt().float()

    def scaled_time(self, u):
        # The network sees the time scaled to the same [0, 1000) range as the discrete schedule.
        return (u.float() * 1000).to(u.device)


def _choice(d: dict, key: str, allowed: tuple) -> str:
    """A setting of the `diffusion` section; checkpoints saved before it existed lack it and get its default
    (allowed[0]), which is what they were trained with."""
    value = d.get(key, allowed[0])
    if value not in allowed:
        raise ValueError(f"diffusion.{key} must be one of {allowed}, got {value!r}")
    return value


def build_schedule(cfg: dict) -> NoiseSchedule:
    """From the `diffusion` section of a profile (plus the resolution for the shifted cosine).
    logsnr_clip applies to the shifted cosine only (the discrete schedule has no clip bounds)."""
    d = cfg["diffusion"]
    if d["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {d['prediction_type']!r}")
    time_input = _choice(d, "time_input", TIME_INPUTS)
    clip = _choice(d, "logsnr_clip", LOGSNR_CLIPS)
    if d["schedule"] == "ddpm":
        return DiscreteSchedule(d["num_train_timesteps"], d["beta_schedule"], d["prediction_type"], time_input)
    if d["schedule"] == "shifted_cosine":
        return ShiftedCosineSchedule(
            cfg["data"]["resolution"], d["noise_d"], d["prediction_type"], logsnr_clip=clip, time_input=time_input
        )
    raise ValueError(f"unknown schedule {d['schedule']!r}: use 'ddpm' or 'shifted_cosine'")

"""An exact class-conditional denoiser for planted data, shared by the explanation tests."""

import torch

from diffusion_classifier import profiles
from diffusion_classifier.models.schedules import build_schedule


class PointMassDenoiser(torch.nn.Module):
    """The exact eps-predictor for data where class c is the single image points[c]: eps = (x_t - a p_c) / s.
    Class 1 differs from class 0 only inside the planted patch, so all class evidence lies there."""

    def __init__(self, points: torch.Tensor):
        super().__init__()
        self.points = torch.nn.Parameter(points, requires_grad=False)
        cfg = profiles.get_profile("smoke", "pneumonia")
        self.schedule = build_schedule(cfg)
        self.n_classes, self.null_label = len(points), len(points)

    def encode(self, x):
        return x

    def decode(self, z):
        return z

    def predict(self, x_t, u, labels):
        a, s = self.schedule.alpha_sigma(u)
        means = torch.cat([self.points, self.points.mean(0, keepdim=True)])  # null label: the mixture's mean
        return (x_t - a.view(-1, 1, 1, 1) * means[labels]) / s.view(-1, 1, 1, 1)

"""uint8 images -> model tensors: resized to the profile's resolution, scaled to [-1, 1], channels first.
Deterministic (no randomness, antialiased bilinear resize), so scores are reproducible."""

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import DataError


def to_tensor(images: np.ndarray, size: int | None = None, name: str = "images") -> torch.Tensor:
    """(N, H, W[, C]) uint8 (or float on the 0-255 scale, e.g. from 16-bit sources) -> (N, C, size, size)
    float32 in [-1, 1]."""
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{name}: expected uint8 or float images, got {images.dtype}")
    if images.ndim not in (3, 4) or len(images) == 0:
        raise DataError(f"{name}: expected a non-empty (N, H, W[, C]) array, got shape {images.shape}")
    if images.ndim == 3:
        images = images[..., None]
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
    if not torch.isfinite(x).all():
        raise DataError(f"{name}: non-finite values after preprocessing")
    return x.contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, for figures."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool = True, vflip: bool = False) -> torch.Tensor:
    """Random flips (seeded) for training; chest X-rays keep their vertical orientation, skin lesions need not."""
    if flip:
        m = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(-1), x)
    if vflip:
        m = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(-2), x)
    return x

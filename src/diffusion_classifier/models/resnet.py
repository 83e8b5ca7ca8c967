"""The discriminative baseline: MONAI's ResNet-18 (`build_resnet18`), with the usual small-image stem (3x3 stride-1
first convolution) for small (MedMNIST-size) inputs; its random-shift augmentation, batched class probabilities
(`predict_proba`) and the loading of its kept weights (safetensors). Its training is `training.resnet`.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18
from safetensors.torch import load_file

from ..core.device import autocast
from ..core.errors import CheckpointError


def build_resnet18(in_channels: int, n_classes: int, resolution: int) -> torch.nn.Module:
    small = resolution <= 64
    return resnet18(
        spatial_dims=2,
        n_input_channels=in_channels,
        num_classes=n_classes,
        conv1_t_size=3 if small else 7,
        conv1_t_stride=1 if small else 2,
    )


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (reflect padding), seeded."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.no_grad()
def predict_proba(model, x: torch.Tensor, batch_size: int = 256, device=None, precision="no") -> np.ndarray:
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for b in x.split(batch_size):
        with autocast(device, precision):
            out.append(torch.softmax(model(b.to(device)).float(), 1).cpu())
    return torch.cat(out).numpy()


def load_baseline(out_dir, model) -> torch.nn.Module:
    path = Path(out_dir) / "best.safetensors"
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot load baseline weights ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return model.eval()

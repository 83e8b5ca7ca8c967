"""The discriminative baseline: MONAI's ResNet-18, trained from scratch on the same split and resolution.

Small inputs (MedMNIST-size) get the usual small-image stem (3x3 stride-1 first convolution); early stopping
on validation AUC; the best weights are kept as safetensors.
"""
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .device import autocast, default_device, resolve_precision
from .errors import CheckpointError
from .metrics import binary_metrics
from .preprocess import augment


def build_resnet18(in_channels: int, n_classes: int, resolution: int) -> torch.nn.Module:
    small = resolution <= 64
    return resnet18(spatial_dims=2, n_input_channels=in_channels, num_classes=n_classes,
                    conv1_t_size=3 if small else 7, conv1_t_stride=1 if small else 2)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (reflect padding), seeded."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


@torch.no_grad()
def predict_proba(model, x: torch.Tensor, batch_size: int = 256, device=None, precision="no") -> np.ndarray:
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for b in x.split(batch_size):
        with autocast(device, precision):
            out.append(torch.softmax(model(b.to(device)).float(), 1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(b.to(device)).float().cpu() for b in x.split(batch_size)]).numpy()


def train_baseline(cfg: dict, x_train, y_train, x_val, y_val, n_classes: int, out_dir, resume: bool = True):
    """Train ResNet-18; returns (model with the best-val-AUC weights, history list). Re-running a finished run
    loads it instead of training again."""
    out_dir = Path(out_dir)
    b = cfg["baseline"]
    device = default_device()
    precision = resolve_precision(cfg["train"]["mixed_precision"], device)
    torch.manual_seed(cfg["seed"])
    model = build_resnet18(x_train.shape[1], n_classes, x_train.shape[-1]).to(device)
    if resume and (out_dir / "best.safetensors").exists() and (out_dir / "history.json").exists():
        return load_baseline(out_dir, model), json.loads((out_dir / "history.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=b["lr"], weight_decay=b["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=b["epochs"])
    y_train = torch.as_tensor(y_train)
    # Class-balanced loss weights: both tasks are imbalanced and the baseline should not win on the prior alone.
    counts = torch.bincount(y_train, minlength=n_classes).float()
    weight = (counts.sum() / (n_classes * counts.clamp(min=1))).to(device)
    best, wait, history = -1.0, 0, []
    for epoch in tqdm(range(b["epochs"]), desc=f"baseline {cfg.get('task')}"):
        g = torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)
        perm = torch.randperm(len(x_train), generator=g)
        model.train()
        losses = []
        for i in range(0, len(perm), b["batch_size"]):
            idx = perm[i:i + b["batch_size"]]
            xb = augment(x_train[idx], g, cfg["data"]["hflip"], cfg["data"]["vflip"])
            xb = random_shift(xb, g, max(1, x_train.shape[-1] // 16)).to(device)
            with autocast(device, precision):
                loss = F.cross_entropy(model(xb).float(), y_train[idx].to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        p_val = predict_proba(model, x_val, device=device, precision=precision)
        auc = binary_metrics(np.asarray(y_val), p_val.argmax(1), p_val[:, 1])["auc"] if n_classes == 2 else np.nan
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_auc": float(auc)})
        if auc > best:
            best, wait = auc, 0
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "best.safetensors"))
        else:
            wait += 1
            if wait >= b["patience"]:
                break
    (out_dir / "history.json").write_text(json.dumps(history))
    return load_baseline(out_dir, model), history


def load_baseline(out_dir, model) -> torch.nn.Module:
    path = Path(out_dir) / "best.safetensors"
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load baseline weights ({type(exc).__name__}: {str(exc)[:200]})") from None
    return model.eval()

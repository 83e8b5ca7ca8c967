"""The ResNet-18 baseline's training, on the same split and resolution as the denoiser.

Batches are class-balanced like the denoiser's (or the loss class-weighted); the kept epoch is the best on the
validation criterion (class-balanced cross-entropy by default: with 30 positives in a val split, AUC picks noisy
epochs) and training stops once it has not improved for `patience` epochs, never before `min_epochs`. Weights as
safetensors.
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..core.device import autocast, default_device, resolve_precision
from ..core.seeds import epoch_seed
from ..data.preprocess import augment
from ..evaluation.metrics import binary_metrics
from ..models.resnet import build_resnet18, load_baseline, predict_proba, random_shift
from .batches import batch_indices


def balanced_cross_entropy(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the mean negative log-likelihood of that class's images (each class counts once)."""
    nll = -np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, 1.0))
    return float(np.mean([nll[labels == c].mean() for c in np.unique(labels)]))


def train_baseline(cfg: dict, x_train, y_train, x_val, y_val, n_classes: int, out_dir, resume: bool = True):
    """Train ResNet-18; returns (model with the best weights on the validation criterion, history list).
    Re-running a finished run loads it instead of training again."""
    out_dir = Path(out_dir)
    b = cfg["baseline"]
    if b["select_on"] not in ("val_loss", "val_auc"):
        raise ValueError(f"baseline.select_on must be val_loss or val_auc, got {b['select_on']!r}")
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
    y_val = np.asarray(y_val)
    counts = torch.bincount(y_train, minlength=n_classes).float()
    # Balanced batches need no loss weights; without them the loss is class-weighted, so that the baseline never
    # wins on the class prior alone.
    weight = None if b["balanced_sampling"] else (counts.sum() / (n_classes * counts.clamp(min=1))).to(device)
    best, wait, history = float("inf"), 0, []
    for epoch in tqdm(range(b["epochs"]), desc=f"baseline {cfg.get('task')}"):
        g = torch.Generator().manual_seed(epoch_seed(cfg["seed"], epoch))
        if b["balanced_sampling"]:
            perm = batch_indices(y_train, len(y_train), g, balanced=True)  # an epoch = as many draws as images
        else:
            perm = torch.randperm(len(x_train), generator=g)
        model.train()
        losses = []
        for i in range(0, len(perm), b["batch_size"]):
            idx = perm[i : i + b["batch_size"]]
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
        auc = binary_metrics(y_val, p_val.argmax(1), p_val[:, 1])["auc"] if n_classes == 2 else np.nan
        val_loss = balanced_cross_entropy(p_val, y_val)
        history.append(
            {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_auc": float(auc)}
        )
        criterion = val_loss if b["select_on"] == "val_loss" else -auc  # lower is better
        if criterion < best:
            best, wait = criterion, 0
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "best.safetensors"))
            history[-1]["selected"] = True
        else:
            wait += 1
            if wait >= b["patience"] and epoch + 1 >= b["min_epochs"]:
                break
    (out_dir / "history.json").write_text(json.dumps(history))
    return load_baseline(out_dir, model), history


def selected_epoch(history: list[dict]) -> int:
    """The epoch whose weights were kept (the last one marked as a new best)."""
    return max(h["epoch"] for h in history if h.get("selected"))

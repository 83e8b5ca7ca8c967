"""Training loop for the class-conditional denoiser.

AdamW, linear warm-up then cosine decay, EMA weights (used for evaluation), gradient clipping, label dropout
to the null label, optional min-SNR weighting; `accelerate` for devices, mixed precision and several GPUs.
Everything random in step s (batch indices, flips, times, noise, label dropout) comes from a generator seeded
by (seed, s), so a run resumed from a checkpoint reaches the same weights as an uninterrupted one.

Several processes: `train.batch_size` is the global batch. Every process draws the randomness of the whole
batch from the shared (seed, s) generator and trains on its own equal slice (process i of P: rows
i*B/P .. (i+1)*B/P - 1), so P processes with B/P images each see exactly the draws of one process with B, and
the gradients the DDP wrapper averages are those of the one-process batch (equal up to floating-point summation
order). Only dropout masks (torch's global generator) differ per process. B must be a multiple of P.
"""

import copy
import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .checkpointing import (
    atomic_dir_write,
    load_state,
    main_process_lock,
    read_json,
    recover,
    save_state,
    verify_manifest,
)
from .denoiser import Denoiser, build_unet
from .device import cap_threads, default_device, resolve_precision
from .errors import CheckpointError
from .preprocess import augment

FINAL, LAST = "final", "last"
INPUTS = "inputs.json"  # what the run was trained on: digests of the arrays and the class names


def diffusion_loss(model, x0, labels, generator, cfg, net=None, shard=(0, 1)) -> torch.Tensor:
    """Mean loss over (x0, labels), which are part `shard` = (index, count) of `count` equal parts of a batch.
    The times, noise and label dropout are drawn for the whole batch (so every process consumes `generator`
    alike) and the part's rows kept. `net` runs the prediction: in training the prepared model, whose
    (DDP) forward makes backward average the gradients over processes; by default `model` itself."""
    d = cfg["diffusion"]
    x0 = model.encode(x0)  # identity for pixel-space models, the frozen VAE for Stable Diffusion
    part = x0.shape[0]
    n, rows = part * shard[1], slice(part * shard[0], part * (shard[0] + 1))
    u = torch.rand(n, generator=generator)[rows].to(x0.device)
    eps = torch.randn((n, *x0.shape[1:]), generator=generator)[rows].to(x0.device)
    drop = (torch.rand(n, generator=generator)[rows] < d["label_dropout"]).to(x0.device)
    labels = torch.where(drop, torch.full_like(labels, model.null_label), labels)
    x_t = model.schedule.add_noise(x0, eps, u)
    pred = (model if net is None else net)(x_t, u, labels).float()
    per_sample = (pred - model.schedule.target(x0, eps, u)).pow(2).flatten(1).mean(1)
    return (model.schedule.loss_weight(u, d["loss_weighting"], d["min_snr_gamma"]) * per_sample).mean()


def batch_indices(labels: torch.Tensor, batch_size: int, generator: torch.Generator, balanced: bool) -> torch.Tensor:
    """Indices of one training batch, drawn with replacement. `balanced`: every class is equally likely (each image
    weighted 1 / its class count), as the paper's subsampling to balanced classes intends; otherwise uniform over
    images, so the model sees the classes at their (possibly imbalanced) data frequencies."""
    if not balanced:
        return torch.randint(0, len(labels), (batch_size,), generator=generator)
    counts = torch.bincount(labels).float()
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator)


def lr_lambda(warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


@torch.no_grad()
def per_class_loss(model, x, y, cfg, seed: int, n_batches: int, device) -> dict:
    """Validation loss per class with fixed draws (the same every evaluation), conditioned on the true label."""
    out = {}
    bs = cfg["train"]["batch_size"]
    for c, name in enumerate(model.class_names):
        xc = x[y == c]
        g = torch.Generator().manual_seed(seed + 7919 * c)
        losses = []
        for b in range(min(n_batches, math.ceil(len(xc) / bs))):
            xb = xc[b * bs : (b + 1) * bs].to(device)
            lab = torch.full((len(xb),), c, device=device)
            d = dict(cfg, diffusion=dict(cfg["diffusion"], label_dropout=0.0))
            losses.append(diffusion_loss(model, xb, lab, g, d).item())
        out[f"val_loss_{name}"] = float(sum(losses) / max(1, len(losses)))
    return out


def _write_checkpoint(path: Path, model, ema, optimizer, info: dict):
    def write(tmp):
        model.save(tmp / "model")
        ema.save(tmp / "ema")
        save_state(tmp, optimizer, info)

    atomic_dir_write(path, write)


def _digest(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(torch.as_tensor(array).cpu().numpy()).tobytes()).hexdigest()


def _check_inputs(out_dir: Path, inputs: dict, resume: bool):
    """A run folder belongs to one training set: resuming or reusing it with other data or classes is refused,
    where it would otherwise silently return (or continue) a model trained on something else."""
    path = out_dir / INPUTS
    if resume and path.exists():
        old = read_json(path)
        changed = [k for k in inputs if old.get(k) != inputs[k]]
        if changed:
            raise CheckpointError(
                f"{path}: this run was trained with other {changed}; remove {out_dir} or use another folder"
            )
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(inputs, indent=1))
    tmp.replace(path)


def train_denoiser(
    cfg: dict,
    x_train,
    y_train,
    x_val,
    y_val,
    class_names,
    out_dir,
    resume: bool = True,
    stop_after: int | None = None,
    model=None,
):
    """Train (or resume, or return the finished model from) `out_dir`. Returns (EMA model, history DataFrame).

    `model`: any denoiser with the `Denoiser` interface (forward, schedule, save, load_trainable); by default a
    fresh class-conditional UNet from the profile. Only its parameters with requires_grad are trained (LoRA).
    `stop_after` ends the run early after that many steps (a cooperative stop; tests/test_kills.py kills for real).
    `out_dir` is locked while this runs, and refused if it was trained on other data or classes.
    """
    out_dir = Path(out_dir)
    with main_process_lock(out_dir):
        inputs = {
            "x_train": _digest(x_train),
            "y_train": _digest(y_train),
            "x_val": _digest(x_val),
            "y_val": _digest(y_val),
            "class_names": list(class_names),
        }
        _check_inputs(out_dir, inputs, resume)
        return _train(cfg, x_train, y_train, x_val, y_val, class_names, out_dir, resume, stop_after, model)


def _train(cfg, x_train, y_train, x_val, y_val, class_names, out_dir: Path, resume, stop_after, model):
    t = cfg["train"]
    seed = cfg["seed"]
    torch.manual_seed(seed)  # weight initialisation
    if model is None:
        model = Denoiser(build_unet(cfg, x_train.shape[1], len(class_names)), cfg, class_names)
    for folder in (out_dir / FINAL, out_dir / LAST):
        recover(folder)
    if resume and (out_dir / FINAL).exists():
        verify_manifest(out_dir / FINAL)
        info = read_json(out_dir / FINAL / "train_state.json")
        if info["step"] >= t["steps"]:
            model.load_trainable(out_dir / FINAL / "ema")
            return model.eval(), pd.DataFrame(info["history"])

    device = default_device()
    cap_threads()  # several processes on one CPU: processes x threads <= cores
    accelerator = Accelerator(mixed_precision=resolve_precision(t["mixed_precision"], device), cpu=device.type == "cpu")
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t["lr"], weight_decay=t["weight_decay"]
    )
    step, history = 0, []
    if resume and (out_dir / LAST).exists():
        verify_manifest(out_dir / LAST)
        model.load_trainable(out_dir / LAST / "model")
        ema.load_trainable(out_dir / LAST / "ema")
        info = load_state(out_dir / LAST, optimizer)
        step, history = info["step"], info["history"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t["warmup_steps"], t["steps"]), last_epoch=-1)
    with warnings.catch_warnings():  # fast-forward the learning-rate schedule to the resumed step
        warnings.simplefilter("ignore")
        for _ in range(step):
            scheduler.step()
    rank, world = accelerator.process_index, accelerator.num_processes
    if t["batch_size"] % world:
        raise ValueError(
            f"train.batch_size {t['batch_size']} (the global batch) must be a multiple of the {world} processes"
        )
    mine = slice(rank * t["batch_size"] // world, (rank + 1) * t["batch_size"] // world)
    model, optimizer = accelerator.prepare(model, optimizer)  # model: the DDP wrapper with several processes
    ema.to(accelerator.device)
    raw = accelerator.unwrap_model(model)  # the module itself: encode, schedule, checkpoints, the EMA's source
    y_val = torch.as_tensor(y_val)
    y_train = torch.as_tensor(y_train)

    bar = tqdm(total=t["steps"], initial=step, desc=f"train {cfg.get('task')}", disable=not accelerator.is_main_process)
    running = []
    while step < t["steps"]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step * 101)  # the same in every process
        torch.manual_seed(seed * 1_000_003 + step * 101 + rank)  # dropout, if any: own masks per process
        idx = batch_indices(y_train, t["batch_size"], g, t["balanced_sampling"])
        xb = augment(x_train[idx], g, cfg["data"]["hflip"], cfg["data"]["vflip"])[mine].to(accelerator.device)
        with accelerator.autocast():
            loss = diffusion_loss(
                raw, xb, y_train[idx][mine].to(accelerator.device), g, cfg, net=model, shard=(rank, world)
            )
        accelerator.backward(loss)
        if t["grad_clip"]:
            accelerator.clip_grad_norm_(model.parameters(), t["grad_clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            decay = min(t["ema_decay"], (1 + step) / (10 + step))  # warm-up of the EMA, as in diffusers' EMAModel
            live = dict(raw.named_parameters())
            shadow = dict(ema.named_parameters())
            torch._foreach_lerp_([shadow[n] for n in trainable], [live[n] for n in trainable], 1 - decay)
        step += 1
        running.append(accelerator.reduce(loss.detach(), "mean").item())  # the loss of the global batch
        bar.update(1)
        bar.set_postfix(loss=f"{sum(running[-20:]) / len(running[-20:]):.4f}")
        checkpoint = step % t["checkpoint_every"] == 0 or step == t["steps"]
        if step % t["log_every"] == 0 or checkpoint:  # a checkpoint always gets its own history row
            history.append({"step": step, "train_loss": sum(running) / len(running), "lr": scheduler.get_last_lr()[0]})
            running = []
        if checkpoint:
            history[-1].update(per_class_loss(ema, x_val, y_val, cfg, seed, t["val_batches"], accelerator.device))
            if accelerator.is_main_process:
                _write_checkpoint(out_dir / LAST, raw, ema, optimizer, {"step": step, "history": history})
            accelerator.wait_for_everyone()
        if stop_after is not None and step >= stop_after:
            bar.close()
            return ema, pd.DataFrame(history)
    bar.close()
    if accelerator.is_main_process:
        atomic_dir_write(
            out_dir / FINAL,
            lambda tmp: (
                ema.save(tmp / "ema"),
                (tmp / "train_state.json").write_text(json.dumps({"step": step, "history": history})),
            ),
        )
    accelerator.wait_for_everyone()
    return ema.cpu(), pd.DataFrame(history)

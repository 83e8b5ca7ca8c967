"""Training loop for the class-conditional denoiser.

AdamW, linear warm-up then cosine decay, EMA weights (used for evaluation; updated every `train.ema_every` steps),
gradient clipping, label dropout to the null label, optional min-SNR or the authors' eps-space weighting; `accelerate`
for devices, mixed precision and several GPUs. The returned model is the final EMA, or with `train.select_on` =
"val_f1" the EMA whose diffusion classifier scored the best validation F1 (see `CheckpointSelection`).
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
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..classifier import rules
from ..classifier.engine import ScoreSettings, ScoringEngine
from ..core import seeds
from ..core.checkpoints import (
    atomic_dir_write,
    load_state,
    main_process_lock,
    read_json,
    recover,
    save_state,
    verify_manifest,
)
from ..core.device import cap_threads, default_device, resolve_precision
from ..core.errors import CheckpointError
from ..data.preprocess import augment
from ..evaluation.metrics import binary_metrics
from ..models.denoiser import Denoiser, build_network
from ..models.schedules import check_loss_weighting
from .batches import batch_indices

FINAL, LAST = "final", "last"
BEST = "best"  # train.select_on = "val_f1": the EMA with the best validation F1 so far (ema/ + train_state.json)
SELECTION_SCORES = "select_scores"  # the error tensor of the latest selection evaluation, rewritten each time
SELECT_ON = ("final", "val_f1")
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
    residual = model.schedule.loss_residual(pred, x0, eps, x_t, u, d["loss_weighting"])
    per_sample = residual.pow(2).flatten(1).mean(1)
    return (model.schedule.loss_weight(u, d["loss_weighting"], d["min_snr_gamma"]) * per_sample).mean()


@torch.no_grad()
def update_ema(ema, model, names: list, step: int, decay: float, every: int = 1):
    """Move the EMA's parameters `names` towards the model's after optimizer step `step` (counted from 0), but only
    when step + 1 is a multiple of `every`: every = 1 updates after each step, the authors' 5 after steps 5, 10, ...
    (counted from 1). The decay's warm-up (as in diffusers' EMAModel) follows the optimizer step, not the update
    count. The authors' ema_pytorch (update_every 5) updates at counts 0, 5, 10, ..., copies the weights for the first
    50 steps and warms the decay as 1 - (1 + n)^(-2/3): differences kept deliberately, so that every = 1 stays the
    EMA the smoke and cpu models were trained with."""
    if (step + 1) % every:
        return
    decay = min(decay, (1 + step) / (10 + step))
    live = dict(model.named_parameters())
    shadow = dict(ema.named_parameters())
    torch._foreach_lerp_([shadow[n] for n in names], [live[n] for n in names], 1 - decay)


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
        g = torch.Generator().manual_seed(seeds.val_seed(seed, c))
        losses = []
        for b in range(min(n_batches, math.ceil(len(xc) / bs))):
            xb = xc[b * bs : (b + 1) * bs].to(device)
            lab = torch.full((len(xb),), c, device=device)
            d = dict(cfg, diffusion=dict(cfg["diffusion"], label_dropout=0.0))
            losses.append(diffusion_loss(model, xb, lab, g, d).item())
        out[f"val_loss_{name}"] = float(sum(losses) / max(1, len(losses)))
    return out


class CheckpointSelection:
    """train.select_on = "val_f1": choose the returned model by the diffusion classifier's own validation F1, as
    the authors did. At every selection step (`due`) the EMA scores a fixed subset of the validation images
    (`selection_subset`) with the scoring engine (select_draws draws, fixed by (seed, image, draw), so evaluations
    differ only by the weights) and the profile's decision rule; F1 has positive = class 1. A strictly better F1
    (so ties keep the earlier step) writes the EMA to out_dir/best at once. Every selection step is also a
    checkpoint step, and the train state records the best (step, F1). A resumed run takes the best from out_dir/best
    itself (`read_best`): a kill between writing best/ and the step's checkpoint then leaves best/ and the state
    consistent even where the replayed steps are not bit-identical (GPU kernels)."""

    def __init__(self, cfg: dict, x_val, y_val, out_dir: Path, best: dict | None = None):
        t = cfg["train"]
        self.cfg, self.out_dir, self.best = cfg, out_dir, best
        self.every = t["select_every"] or t["checkpoint_every"]
        self.rule = rules.check_rule(cfg["decision"]["rule"])
        keep = selection_subset(len(y_val), t["select_images"], cfg["seed"])
        self.x, self.y = torch.as_tensor(x_val)[keep].float().cpu(), np.asarray(y_val)[keep.numpy()]
        # exact early stopping never changes a vote's winner (it stops only once no class can overtake)
        early = "exact" if rules.RULES[self.rule].early_stop else "off"
        self.settings = ScoreSettings.from_profile(cfg, n_draws=t["select_draws"], early_stop=early)

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.cfg["train"]["steps"]

    def evaluate(self, ema, step: int, n_classes: int, accelerator) -> float:
        """Validation F1 of `ema`; keeps it in out_dir/best if it beats the best so far."""
        cache = self.out_dir / SELECTION_SCORES
        if accelerator.is_main_process:
            shutil.rmtree(cache, ignore_errors=True)  # never reuse the scores of other weights (a killed run's)
        accelerator.wait_for_everyone()
        # a copy: the engine may switch its model to channels_last, which the EMA updates and checkpoints must not see
        engine = ScoringEngine(copy.deepcopy(ema), self.settings, accelerator.device)
        E = engine.score(self.x, n_classes, cache_dir=cache, desc=f"select@{step}").E
        f1 = float(binary_metrics(self.y, rules.predict(E, self.rule), rules.positive_score(E, self.rule))["f1"])
        if self.best is None or f1 > self.best["val_f1"]:
            self.best = {"step": step, "val_f1": f1}
            if accelerator.is_main_process:
                atomic_dir_write(
                    self.out_dir / BEST,
                    lambda tmp: (ema.save(tmp / "ema"), (tmp / "train_state.json").write_text(json.dumps(self.best))),
                )
        accelerator.wait_for_everyone()
        return f1


def selection_subset(n_val: int, n_images: int | None, seed: int) -> torch.Tensor:
    """Indices of the validation images the checkpoints are compared on: all (None), or a seeded random subset,
    sorted, the same at every evaluation and after a resume."""
    if n_images is None or n_images >= n_val:
        return torch.arange(n_val)
    return torch.randperm(n_val, generator=torch.Generator().manual_seed(seed))[:n_images].sort().values


def read_best(out_dir: Path) -> dict | None:
    """The (step, F1) of the EMA kept in out_dir/best, or None before the first evaluation."""
    folder = out_dir / BEST
    if not folder.exists():
        return None
    verify_manifest(folder)
    return read_json(folder / "train_state.json")


def load_best(out_dir: Path, model, best: dict | None):
    """Load the selected EMA (out_dir/best) into `model`, refused unless it is the evaluation the train state names."""
    folder = out_dir / BEST
    if best is None or not folder.exists():
        raise CheckpointError(
            f"{out_dir}: no checkpoint selected on validation F1 in this run; remove {out_dir} or use another folder"
        )
    verify_manifest(folder)
    saved = read_json(folder / "train_state.json")
    if saved.get("step") != best["step"]:
        raise CheckpointError(
            f"{folder}: holds step {saved.get('step')} but the train state selected step {best['step']}; "
            f"remove {out_dir} or use another folder"
        )
    return model.load_trainable(folder / "ema")


def check_selection(t: dict):
    if t["select_on"] not in SELECT_ON:
        raise ValueError(f"train.select_on must be one of {SELECT_ON}, got {t['select_on']!r}")
    if t["select_on"] == "val_f1" and t["select_draws"] % 2 == 0:
        raise ValueError(f"train.select_draws must be odd (so two classes never tie), got {t['select_draws']}")


def _train_state(step: int, history: list, selection) -> dict:
    """train_state.json: with selection, also the best (step, F1) so far."""
    info = {"step": step, "history": history}
    if selection is not None and selection.best is not None:
        info["best"] = selection.best
    return info


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
    predicts = cfg["diffusion"]["prediction_type"] if model is None else model.schedule.prediction_type
    check_loss_weighting(cfg["diffusion"]["loss_weighting"], predicts)  # before building or training anything
    torch.manual_seed(seed)  # weight initialisation
    if model is None:
        model = Denoiser(build_network(cfg, x_train.shape[1], len(class_names)), cfg, class_names)
    check_selection(t)
    for folder in (out_dir / FINAL, out_dir / LAST, out_dir / BEST):
        recover(folder)
    if resume and (out_dir / FINAL).exists():
        verify_manifest(out_dir / FINAL)
        info = read_json(out_dir / FINAL / "train_state.json")
        if info["step"] >= t["steps"]:
            if t["select_on"] == "val_f1":
                load_best(out_dir, model, info.get("best"))
            else:
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
    selection = None
    if t["select_on"] == "val_f1":
        selection = CheckpointSelection(cfg, x_val, y_val, out_dir, read_best(out_dir) if resume else None)
    # the schedule starts at the resumed step: LambdaLR sets lr = base lr x f(scheduler steps so far)
    schedule, start = lr_lambda(t["warmup_steps"], t["steps"]), step
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: schedule(start + i))
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
        g = torch.Generator().manual_seed(seeds.step_seed(seed, step))  # the same in every process
        torch.manual_seed(seeds.step_seed(seed, step) + rank)  # dropout, if any: own masks per process
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
        update_ema(ema, raw, trainable, step, t["ema_decay"], t["ema_every"])
        step += 1
        running.append(accelerator.reduce(loss.detach(), "mean").item())  # the loss of the global batch
        bar.update(1)
        bar.set_postfix(loss=f"{sum(running[-20:]) / len(running[-20:]):.4f}")
        select = selection is not None and selection.due(step)
        checkpoint = step % t["checkpoint_every"] == 0 or step == t["steps"] or select
        if step % t["log_every"] == 0 or checkpoint:  # a checkpoint always gets its own history row
            history.append({"step": step, "train_loss": sum(running) / len(running), "lr": scheduler.get_last_lr()[0]})
            running = []
        if checkpoint:
            history[-1].update(per_class_loss(ema, x_val, y_val, cfg, seed, t["val_batches"], accelerator.device))
            if select:
                history[-1]["val_f1"] = selection.evaluate(ema, step, len(class_names), accelerator)
            if accelerator.is_main_process:
                _write_checkpoint(out_dir / LAST, raw, ema, optimizer, _train_state(step, history, selection))
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
                (tmp / "train_state.json").write_text(json.dumps(_train_state(step, history, selection))),
            ),
        )
    accelerator.wait_for_everyone()
    if selection is not None:  # final/ keeps the final EMA; the run's model is the selected one
        load_best(out_dir, ema, selection.best)
    return ema.cpu(), pd.DataFrame(history)

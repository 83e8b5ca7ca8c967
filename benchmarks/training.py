"""Training speed: steps and images per second of each model's training step in several configurations (fp32,
bf16 autocast, channels_last, torch.compile), each against the raw forward + backward of the same model at the same
batch (the ceiling: no batch drawing, noising, optimizer or EMA); FLOPs per step (torch.utils.flop_counter),
achieved FLOP/s and model FLOP utilisation (MFU: achieved FLOP/s over this machine's compute peak at the same
precision, the faster of a large matmul and a large 3x3 convolution, measured in the same run); and whether the
fastest configuration trains like the default one (loss curves over --loss-steps steps, against the gap between
two seeds of the default).

    .venv/bin/python benchmarks/training.py               # cpu profile: both tasks, every configuration
    .venv/bin/python benchmarks/training.py --quick       # seconds: smoke-size models, a few configurations
    .venv/bin/python benchmarks/training.py --profile paper --configs bf16 bf16+compile --out training_gpu.csv

Models: the profile's denoiser of each task (cpu: pneumonia 32 px 1 channel batch 128, melanoma_balanced 64 px
3 channels batch 64) and the ResNet-18 baseline at the same shape with its batch size, on random tensors (speed
does not depend on pixel values). The configurations of a model are timed in interleaved rounds (best of each), so
that drifts in the machine's speed hit all alike. The default configuration is what training runs today: the
profile's precision on this device, eager, contiguous; ratio_vs_default and the loss check need it among
--configs. Writes results/benchmarks/training.csv after every model, and the loss curves to
training_loss_curves.csv.
"""

import argparse
import copy
import gc
import itertools
from dataclasses import dataclass
from types import SimpleNamespace

import measure
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from diffusion_classifier import profiles
from diffusion_classifier.core import seeds
from diffusion_classifier.core.device import autocast, cap_threads, device_name, resolve_precision
from diffusion_classifier.core.paths import results_dir
from diffusion_classifier.data import tasks
from diffusion_classifier.data.preprocess import augment
from diffusion_classifier.models.denoiser import BACKBONES, Denoiser, build_network
from diffusion_classifier.models.resnet import build_resnet18, random_shift
from diffusion_classifier.training.batches import batch_indices
from diffusion_classifier.training.diffusion import diffusion_loss, lr_lambda

CONFIGS = [
    "fp32",
    "bf16",
    "fp32+channels_last",
    "bf16+channels_last",
    "fp32+compile",
    "bf16+compile",
    "bf16+channels_last+compile",
]
PARTS = {"fp32", "bf16", "fp16", "channels_last", "compile"}


def parse_config(name: str) -> SimpleNamespace:
    parts = set(name.split("+"))
    if parts - PARTS or len(parts & {"fp32", "bf16", "fp16"}) != 1:
        raise SystemExit(f"configuration {name!r}: one of fp32/bf16/fp16, optionally +channels_last, +compile")
    precision = "bf16" if "bf16" in parts else "fp16" if "fp16" in parts else "no"
    return SimpleNamespace(
        name=name, precision=precision, channels_last="channels_last" in parts, compile="compile" in parts
    )


@dataclass
class Trainer:
    step: callable  # one training step as the training loop does it; returns the loss
    raw: callable  # forward, loss and backward of a ready batch on the device
    batch: int
    model: torch.nn.Module  # the module being trained


def prepared(module, config):
    """What the step and the raw pass call: the module, compiled and/or fed channels_last inputs."""
    if config.channels_last:
        module.to(memory_format=torch.channels_last)
    net = torch.compile(module) if config.compile else module
    if not config.channels_last:
        return net
    return lambda x, *rest: net(x.contiguous(memory_format=torch.channels_last), *rest)


def random_images(n: int, channels: int, res: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, res, res, generator=g) * 2 - 1, torch.arange(n) % 2


def denoiser_trainer(cfg, channels, device, config, batch):
    t, res, seed = cfg["train"], cfg["data"]["resolution"], cfg["seed"]
    torch.manual_seed(seed)
    model = Denoiser(build_network(cfg, channels, 2), cfg, ["a", "b"]).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = prepared(model, config)
    params, shadow = list(model.parameters()), list(ema.parameters())
    opt = torch.optim.AdamW(params, lr=t["lr"], weight_decay=t["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t["warmup_steps"], t["steps"]))
    x, y = random_images(4 * batch, channels, res, seed)
    steps = itertools.count()

    def step():  # the body of training.train_denoiser's loop, in one process
        s = next(steps)
        g = torch.Generator().manual_seed(seeds.step_seed(seed, s))
        torch.manual_seed(seeds.step_seed(seed, s))
        idx = batch_indices(y, batch, g, t["balanced_sampling"])
        xb = augment(x[idx], g, cfg["data"]["hflip"], cfg["data"]["vflip"]).to(device)
        with autocast(device, config.precision):
            loss = diffusion_loss(model, xb, y[idx].to(device), g, cfg, net=net)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t["grad_clip"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(shadow, params, 1 - min(t["ema_decay"], (1 + s) / (10 + s)))
        return loss.item()

    xr, ur, yr = x[:batch].to(device), torch.rand(batch, device=device), y[:batch].to(device)
    target = torch.randn_like(xr)

    def raw():
        with autocast(device, config.precision):
            loss = (net(xr, ur, yr).float() - target).pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return Trainer(step, raw, batch, model)


def resnet_trainer(cfg, channels, device, config, batch):
    b, res, seed = cfg["baseline"], cfg["data"]["resolution"], cfg["seed"]
    torch.manual_seed(seed)
    model = build_resnet18(channels, 2, res).to(device)
    net = prepared(model, config)
    opt = torch.optim.AdamW(model.parameters(), lr=b["lr"], weight_decay=b["weight_decay"])
    x, y = random_images(4 * batch, channels, res, seed)
    steps = itertools.count()

    def step():  # the body of baseline.train_baseline's batch loop (balanced batches)
        g = torch.Generator().manual_seed(seeds.epoch_seed(seed, next(steps)))
        idx = batch_indices(y, batch, g, balanced=True)
        xb = augment(x[idx], g, cfg["data"]["hflip"], cfg["data"]["vflip"])
        xb = random_shift(xb, g, max(1, res // 16)).to(device)
        with autocast(device, config.precision):
            loss = F.cross_entropy(net(xb).float(), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    xr, yr = x[:batch].to(device), y[:batch].to(device)

    def raw():
        with autocast(device, config.precision):
            loss = F.cross_entropy(net(xr).float(), yr)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return Trainer(step, raw, batch, model)


MODELS = {
    "denoiser": (denoiser_trainer, lambda cfg: cfg["train"]["batch_size"]),
    "resnet18": (resnet_trainer, lambda cfg: cfg["baseline"]["batch_size"]),
}


def per_call(fn, device, calls: int) -> float:
    t0 = measure.clock(device)
    for _ in range(calls):
        fn()
    return (measure.clock(device) - t0) / calls


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def loss_check(build, cfg, default, fastest, steps: int) -> tuple[str, list]:
    """Loss curves of the fastest and the default configuration from the same weights and draws, and of the default
    with another seed: the fastest 'trains like the default' when its curve is no further from the default's than
    another seed's is (mean |difference| per step)."""
    runs = {
        "default": (default, cfg),
        "fastest": (fastest, cfg),
        "default, other seed": (default, dict(cfg, seed=cfg["seed"] + 1)),
    }
    curves = {}
    for label, (config, c) in runs.items():
        trainer = build(c, config)
        curves[label] = np.array([trainer.step() for _ in range(steps)])
        del trainer
    gap = np.abs(curves["fastest"] - curves["default"]).mean()
    noise = np.abs(curves["default, other seed"] - curves["default"]).mean()
    verdict = "the same loss curve within noise" if gap <= noise else "a DIFFERENT loss curve (beyond seed noise)"
    note = (
        f"loss check over {steps} steps: {fastest.name} gives {verdict} as the default {default.name}: mean "
        f"|loss difference| {gap:.4f} vs {noise:.4f} between two seeds of the default; mean loss of the last "
        f"{min(10, steps)} steps {curves['fastest'][-10:].mean():.4f} vs {curves['default'][-10:].mean():.4f}"
    )
    rows = [
        {"run": f"{label} ({runs[label][0].name}, seed {runs[label][1]['seed']})", "step": s + 1, "loss": v}
        for label, curve in curves.items()
        for s, v in enumerate(curve)
    ]
    return note, rows


def bench_model(name, build, cfg, batch, configs, default_name, device, a):
    """Rows of one model: every configuration's step and raw pass, timed in interleaved rounds."""
    counted = build(cfg, parse_config("fp32"), 2)  # FLOPs grow linearly with the batch: count them on 2 images
    flops = measure.count_flops(counted.raw) * batch / 2
    del counted
    trainers, calls, memory, failed = {}, {}, {}, {}
    for config in configs:
        try:
            base = measure.reset_peak_memory(device)
            trainer = build(cfg, config)
            for _ in range(2):  # warm-up: kernel choice, compilation (forward and backward), optimizer state
                trainer.step()
                trainer.raw()
            calls[config.name] = max(1, round(a.seconds / per_call(trainer.step, device, 1)))
            memory[config.name] = measure.peak_memory_gb(device, base)
            trainers[config.name] = trainer
        except Exception as exc:  # e.g. out of memory, or a compiler failure: report it, time the others
            failed[config.name] = why(exc)
            print(f"{name} {config.name}: failed ({failed[config.name]})", flush=True)
            free(device)
    best = {c: {"step": float("inf"), "raw": float("inf")} for c in trainers}
    for _ in range(a.rounds):
        for c, trainer in list(trainers.items()):
            try:
                for what in ("step", "raw"):
                    best[c][what] = min(best[c][what], per_call(getattr(trainer, what), device, calls[c]))
            except Exception as exc:
                failed[c] = why(exc)
                print(f"{name} {c}: failed ({failed[c]})", flush=True)
                del trainers[c], best[c]
                free(device)
    trainers.clear()
    free(device)
    df = pd.DataFrame(
        [
            {
                "model": name,
                "config": c.name,
                "default": c.name == default_name,
                "steps_per_s": 1 / best[c.name]["step"] if c.name in best else np.nan,
                "raw_steps_per_s": 1 / best[c.name]["raw"] if c.name in best else np.nan,
                "peak_mem_gb": memory.get(c.name, np.nan),
                "calls_per_round": calls.get(c.name),
                "note": f"failed: {failed[c.name]}" if c.name in failed else "",
            }
            for c in configs
        ]
    )
    df["gflop_per_step"] = flops / 1e9
    df["images_per_s"] = df.steps_per_s * batch
    df["step_vs_raw"] = df.steps_per_s / df.raw_steps_per_s
    df["ratio_vs_default"] = df.steps_per_s / df.steps_per_s[df.default].max()  # NaN when the default failed
    curves = []
    if df.steps_per_s.notna().any() and df.steps_per_s[df.default].notna().any() and a.loss_steps:
        fastest = df.config[df.steps_per_s.idxmax()]
        if fastest == default_name:
            note = "the default is the fastest configuration"
        else:
            try:
                note, curves = loss_check(build, cfg, parse_config(default_name), parse_config(fastest), a.loss_steps)
            except Exception as exc:
                note = f"loss check failed: {why(exc)}"
        df.loc[df.config == fastest, "note"] = note
    return df, [dict(r, model=name) for r in curves]


def backbone_overrides(profile: str, backbone: str) -> dict:
    """A backbone on a profile: the authors' DiT-B/4 on `paper`, else the profile's settings with that kind."""
    return profiles.PAPER_DIT if profile == "paper" and backbone == "dit" else {"model": {"kind": backbone}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tasks", nargs="*", default=list(profiles.DEFAULT_TASKS))
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--configs", nargs="*", default=None, help=f"default: {' '.join(CONFIGS)}")
    ap.add_argument(
        "--backbones",
        nargs="*",
        default=None,
        choices=list(BACKBONES),
        help="denoiser backbones to time (default: the profile's own); on `paper`, dit is profiles.PAPER_DIT",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best of each)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per configuration and round (whole steps)")
    ap.add_argument("--loss-steps", type=int, default=50, help="steps of the loss-curve check (0: none)")
    ap.add_argument("--matmul-size", type=int, default=None, help="side of the peak-measuring matmul")
    ap.add_argument("--out", default=None, help="file name under results/benchmarks (default training.csv)")
    ap.add_argument("--quick", action="store_true", help="development check: smoke-size models, a few seconds")
    a = ap.parse_args()
    if a.quick:
        a.profile, a.rounds, a.seconds, a.loss_steps = "smoke", 1, 0.05, min(a.loss_steps, 4)
        a.configs = a.configs or ["fp32", "bf16", "fp32+channels_last"]
        a.tasks = a.tasks[:1]
        a.out = a.out or "training_quick.csv"
    configs = [parse_config(c) for c in a.configs or CONFIGS]
    a.out = a.out or "training.csv"
    device = measure.pick_device(a.device)
    threads = cap_threads()
    n = a.matmul_size or (8192 if device.type == "cuda" else 1024 if a.quick else 2048)
    precisions = {c.precision for c in configs}

    def measure_peaks():
        return {p: measure.compute_peak(device, p, n) for p in precisions}

    peaks = measure_peaks()
    out = results_dir() / "benchmarks" / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    frames, curves = [], []
    for task in a.tasks:
        cfg = profiles.get_profile(a.profile, task)
        channels, res = tasks.TASKS[task].channels, cfg["data"]["resolution"]
        precision = resolve_precision(cfg["train"]["mixed_precision"], device)
        default_name = "fp32" if precision == "no" else precision  # what training runs today: eager, contiguous
        runs = [(kind, None) for kind in a.models if kind != "denoiser" or not a.backbones]
        runs += [("denoiser", bb) for bb in (a.backbones or []) if "denoiser" in a.models]
        for kind, backbone in runs:
            make, batch_of = MODELS[kind]
            c0 = (
                cfg
                if backbone is None
                else profiles.get_profile(a.profile, task, backbone_overrides(a.profile, backbone))
            )
            label = kind if backbone is None else f"{kind} {backbone}"
            name = f"{label} {task} ({res} px, {channels} ch, batch {batch_of(c0)})"
            print(f"=== {name}", flush=True)

            def build(c, config, batch=None, make=make, batch_of=batch_of, channels=channels):
                return make(c, channels, device, config, batch or batch_of(c))

            df, model_curves = bench_model(name, build, c0, batch_of(c0), configs, default_name, device, a)
            frames.append(df)
            curves += model_curves
            write(frames, curves, out, a, device, threads, peaks)  # after every model: a killed run keeps them
    end = measure_peaks()  # the peak at the end too: the better of the two is the least disturbed
    peaks.update({p: max(peaks[p], end[p]) for p in precisions})
    write(frames, curves, out, a, device, threads, peaks, final=True)


def write(frames, curves, out, a, device, threads, peaks, final=False):
    df = pd.concat(frames, ignore_index=True)
    peak = df.config.map(lambda c: peaks[parse_config(c).precision])
    df["achieved_gflops"] = df.gflop_per_step * df.steps_per_s
    df["mfu"] = df.achieved_gflops * 1e9 / peak
    df["raw_mfu"] = df.gflop_per_step * df.raw_steps_per_s * 1e9 / peak
    cols = [
        "model",
        "config",
        "steps_per_s",
        "images_per_s",
        "ratio_vs_default",
        "raw_steps_per_s",
        "step_vs_raw",
        "gflop_per_step",
        "achieved_gflops",
        "mfu",
        "raw_mfu",
        "peak_mem_gb",
        "default",
        "calls_per_round",
        "note",
    ]
    df = df.reindex(columns=cols)
    name = device_name(device)
    df.insert(
        0,
        "setup",
        f"{a.profile} profile, {name}, {threads} threads, torch {torch.__version__}, best of "
        f"{a.rounds} rounds; compute peak (faster of matmul and 3x3 conv) "
        + ", ".join(f"{'fp32' if p == 'no' else p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()),
    )
    df.round(4).to_csv(out, index=False)
    if curves:
        pd.DataFrame(curves).round(5).to_csv(out.with_name(out.stem + "_loss_curves.csv"), index=False)
    if final:
        with pd.option_context("display.max_colwidth", 250, "display.width", 250):
            print(df.drop(columns=["setup", "default"]).round(3).to_string(index=False))
        print(f"\nsetup: {df.setup[0]}\nwritten: {out}")
        measure.check_mfu(df, ("mfu", "raw_mfu"))  # after writing: the speed ratios do not depend on the peak


if __name__ == "__main__":
    main()

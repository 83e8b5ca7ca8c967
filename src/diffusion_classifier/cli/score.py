"""Score a split with a trained denoiser, outside the notebooks. Several processes or GPUs share the images:

    python -m diffusion_classifier.cli.score --checkpoint runs/cpu/pneumonia/<hash>/denoiser/final/ema \\
        --task pneumonia --split test --out runs/scores/pneumonia-test
    (a run with train.select_on: val_f1, e.g. the paper profile, is used from .../denoiser/best/ema instead)
    accelerate launch --num_processes 4 -m diffusion_classifier.cli.score ...      # 4 GPUs
    torchrun --nproc_per_node 2 -m diffusion_classifier.cli.score ...              # 2 CPU processes (gloo)

Writes <out>/chunk_*.npz (resumable cache), <out>/scores.npz (E, U, labels) and prints accuracy per rule.
"""

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from .. import profiles, study
from ..classifier import rules
from ..classifier.engine import ScoreSettings, ScoringEngine
from ..core.device import cap_threads
from ..core.errors import CheckpointError, DataError
from ..data.io import SPLITS
from ..data.tasks import TASKS
from ..models.denoiser import Denoiser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--checkpoint",
        required=True,
        help="denoiser folder (…/denoiser/final/ema; …/denoiser/best/ema if trained with train.select_on: val_f1)",
    )
    ap.add_argument("--task", required=True, choices=list(TASKS))
    ap.add_argument("--split", default="test", choices=list(SPLITS))
    ap.add_argument("--out", required=True, help="folder for the chunk cache and scores.npz")
    ap.add_argument("--profile", default="cpu", choices=list(profiles.PROFILES))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-draws", type=_positive_int, default=None)
    ap.add_argument("--t-sampling", choices=["random", "grid"], default=None)
    ap.add_argument("--batch-size", type=_positive_int, default=None)
    ap.add_argument("--chunk-size", type=_positive_int, default=None)
    ap.add_argument("--max-images", type=_positive_int, default=None, help="score only the first N images")
    ap.add_argument(
        "--early-stop",
        choices=["off", "exact", "sequential"],
        default="off",
        help="stop drawing for an image once its majority vote is decided: exactly (no class can "
        "overtake) or sequentially (chance of a different full-vote winner <= --early-stop-alpha)",
    )
    ap.add_argument(
        "--early-stop-alpha",
        type=_probability,
        default=None,
        help="sequential early stopping's flip probability (the profile's scoring.early_stop_alpha by default)",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet forward after a one-off compile (its gain: results/benchmarks/scoring.csv)",
    )
    ap.add_argument("--precision", default=None, choices=["auto", "bf16", "fp16", "no"])
    a = ap.parse_args(argv)
    if a.early_stop_alpha is not None and a.early_stop != "sequential":
        ap.error("--early-stop-alpha applies only with --early-stop sequential")
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        ap.error(f"--out {a.out}: exists and is not a folder")
    return a


def check_compatible(model: Denoiser, cfg: dict, x, checkpoint: str):
    """A model scores only images like those it was trained on: other sizes or channels would not crash the
    (fully convolutional) UNet but give meaningless errors."""
    trained, wanted = model.cfg["data"]["resolution"], cfg["data"]["resolution"]
    if trained != wanted:
        raise CheckpointError(
            f"{checkpoint}: trained at {trained} px, but profile {cfg['profile']!r} scores "
            f"{cfg['task']} at {wanted} px; pass the --profile the model was trained with"
        )
    channels = model.image_channels
    if channels != x.shape[1]:
        raise CheckpointError(f"{checkpoint}: takes {channels}-channel images, but {cfg['task']} has {x.shape[1]}")


def main(argv=None):
    a = parse_args(argv)
    try:
        run(a)
    except (DataError, CheckpointError) as exc:  # one line for the user, never a traceback
        raise SystemExit(f"error: {exc}") from None


def run(a: argparse.Namespace):
    # sets up torch.distributed under torchrun/accelerate: nccl on GPUs; gloo on CPUs, which accelerate only does
    # when asked for cpu (without it every CPU process believed it was alone and scored every chunk)
    state = PartialState(cpu=not torch.cuda.is_available())
    cap_threads()  # processes x threads <= cores
    p = study.prepare(a.task, a.profile, a.data_root, a.seed)
    model = Denoiser.load(a.checkpoint, p.class_names)
    x, y = p.x[a.split], p.y[a.split]
    check_compatible(model, p.cfg, x, a.checkpoint)
    changes = {
        k: v
        for k, v in {
            "n_draws": a.n_draws,
            "t_sampling": a.t_sampling,
            "batch_size": a.batch_size,
            "chunk_size": a.chunk_size,
            "mixed_precision": a.precision,
            "early_stop_alpha": a.early_stop_alpha,
            "compile": a.compile or None,
        }.items()
        if v is not None
    }
    settings = ScoreSettings.from_profile(p.cfg, early_stop=a.early_stop, **changes)
    device = state.device if state.device.type == "cuda" else "cpu"
    if a.max_images is not None:
        x, y = x[: a.max_images], y[: a.max_images]
    scores = ScoringEngine(model, settings, device).score(x, model.n_classes, a.out, desc=f"{a.task} {a.split}")
    if state.is_main_process:
        tmp = Path(a.out) / "scores.tmp.npz"
        np.savez(tmp, E=scores.E, U=scores.U, labels=y)
        tmp.replace(Path(a.out) / "scores.npz")  # atomic: a reader never sees half a file
        for rule in rules.RULES:
            acc = (rules.predict(scores.E, rule) == y).mean()
            print(
                f"{a.task} {a.split}: {rule} rule accuracy {acc:.4f} over {len(y)} images, "
                f"{scores.unet_evals.mean():.1f} UNet evaluations per image"
            )


if __name__ == "__main__":
    main()

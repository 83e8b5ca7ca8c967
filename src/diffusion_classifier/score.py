"""Score a split with a trained denoiser, outside the notebooks. Several processes or GPUs share the images:

    python -m diffusion_classifier.score --checkpoint runs/cpu/pneumonia/<hash>/denoiser/final/ema \\
        --task pneumonia --split test --out runs/scores/pneumonia-test
    accelerate launch --num_processes 4 -m diffusion_classifier.score ...      # 4 GPUs
    torchrun --nproc_per_node 2 -m diffusion_classifier.score ...              # 2 CPU processes (gloo)

Writes <out>/chunk_*.npz (resumable cache), <out>/scores.npz (E, U, labels) and prints accuracy per rule.
"""
import argparse

import numpy as np

from . import decision, study
from .denoiser import Denoiser
from .device import cap_threads
from .scoring import ScoreSettings, ScoringEngine


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="denoiser folder (…/denoiser/final/ema)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--out", required=True, help="folder for the chunk cache and scores.npz")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-draws", type=int, default=None)
    ap.add_argument("--t-sampling", choices=["random", "grid"], default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=None, help="score only the first N images")
    ap.add_argument("--early-stop", choices=["off", "exact", "sequential"], default="off",
                    help="stop drawing for an image once its majority vote is decided: exactly (no class can "
                         "overtake) or sequentially (chance of a different full-vote winner <= --alpha)")
    ap.add_argument("--alpha", type=float, default=None, help="sequential early stopping's flip probability")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet forward (pays off on long runs)")
    ap.add_argument("--precision", default=None, choices=["auto", "bf16", "fp16", "no"])
    a = ap.parse_args(argv)

    from accelerate import PartialState

    state = PartialState()  # sets up torch.distributed (gloo on CPU, nccl on GPU) under torchrun/accelerate
    cap_threads()  # processes x threads <= cores
    p = study.prepare(a.task, a.profile, a.data_root, a.seed)
    model = Denoiser.load(a.checkpoint, p.class_names)
    changes = {k: v for k, v in {"n_draws": a.n_draws, "t_sampling": a.t_sampling, "batch_size": a.batch_size,
                                 "chunk_size": a.chunk_size, "mixed_precision": a.precision,
                                 "early_stop_alpha": a.alpha,
                                 "compile": a.compile or None}.items() if v is not None}
    settings = ScoreSettings.from_profile(p.cfg, early_stop=a.early_stop, **changes)
    device = state.device if state.device.type == "cuda" else "cpu"
    x, y = p.x[a.split], p.y[a.split]
    if a.max_images:
        x, y = x[:a.max_images], y[:a.max_images]
    scores = ScoringEngine(model, settings, device).score(x, model.n_classes, a.out, desc=f"{a.task} {a.split}")
    if state.is_main_process:
        np.savez(f"{a.out}/scores.npz", E=scores.E, U=scores.U, labels=y)
        for rule in ("mean", "vote"):
            acc = (decision.predict(scores.E, rule) == y).mean()
            print(f"{a.task} {a.split}: {rule} rule accuracy {acc:.4f} over {len(y)} images, "
                  f"{scores.unet_evals.mean():.1f} UNet evaluations per image")


if __name__ == "__main__":
    main()

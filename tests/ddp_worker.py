"""Train the tiny denoiser and save its weights; run under torchrun by test_training's multi-process test (one
file per process) and called directly for the one-process reference.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

import torch
from conftest import tiny_cfg, tiny_training_data
from safetensors.torch import save_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from diffusion_classifier.models.denoiser import Denoiser, build_network
from diffusion_classifier.training.diffusion import train_denoiser

# batch_size is the global batch; the clip (on its DDP path, as in every profile) is too high to act, so the gradient
# norms recorded below are the gradients' own
CFG = dict(steps=6, checkpoint_every=6, batch_size=16, grad_clip=1e6)


def gradient_norms():
    """The norm of the gradient each optimizer step applies (after DDP's all-reduce), appended as training runs:
    Adam's steps hardly change when every gradient is scaled, so weights alone would not show summed gradients."""
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad.flatten() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.cat(grads)).item())

    return norms, register_optimizer_step_pre_hook(record)  # the handle removes the hook


def train_and_save(out_dir: Path, rank: int = 0):
    x, y = tiny_training_data()
    cfg = tiny_cfg(**CFG)
    torch.manual_seed(cfg["seed"])
    model = Denoiser(build_network(cfg, 1, 2), cfg, ["a", "b"])
    norms, hook = gradient_norms()
    # the model is trained in place (the DDP wrapper holds this very module), so its live weights can be saved
    try:
        ema, history = train_denoiser(cfg, x, y, x, y, ["a", "b"], out_dir / "run", model=model)
    finally:
        hook.remove()
    weights = {f"live.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
    save_file(weights, str(out_dir / f"weights{rank}.safetensors"))
    (out_dir / f"log{rank}.json").write_text(
        json.dumps({"loss": history.train_loss.tolist(), "grad_norms": norms, "threads": torch.get_num_threads()})
    )


if __name__ == "__main__":
    train_and_save(Path(sys.argv[1]), int(os.environ["RANK"]))

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

from diffusion_classifier.denoiser import Denoiser, build_network
from diffusion_classifier.training import train_denoiser

CFG = dict(steps=6, checkpoint_every=6, batch_size=16)  # batch_size is the global batch


def train_and_save(out_dir: Path, rank: int = 0):
    x, y = tiny_training_data()
    cfg = tiny_cfg(**CFG)
    torch.manual_seed(cfg["seed"])
    model = Denoiser(build_network(cfg, 1, 2), cfg, ["a", "b"])
    # the model is trained in place (the DDP wrapper holds this very module), so its live weights can be saved
    ema, history = train_denoiser(cfg, x, y, x, y, ["a", "b"], out_dir / "run", model=model)
    weights = {f"live.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
    save_file(weights, str(out_dir / f"weights{rank}.safetensors"))
    (out_dir / f"log{rank}.json").write_text(
        json.dumps({"loss": history.train_loss.tolist(), "threads": torch.get_num_threads()})
    )


if __name__ == "__main__":
    train_and_save(Path(sys.argv[1]), int(os.environ["RANK"]))

"""The benchmarks measure what they claim: the training step they time is the training loop's, and the FLOP
counter sees attention on the CPU too."""

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cfg

from diffusion_classifier.models.denoiser import Denoiser, build_unet
from diffusion_classifier.training.diffusion import train_denoiser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import measure  # noqa: E402
import training as bench  # noqa: E402


def test_the_timed_training_step_is_the_training_loops_step(tmp_path):
    cfg = tiny_cfg(steps=3, checkpoint_every=3)
    trainer = bench.denoiser_trainer(cfg, 1, torch.device("cpu"), bench.parse_config("fp32"), batch=16)
    for _ in range(3):
        trainer.step()
    x, y = bench.random_images(4 * 16, 1, 8, cfg["seed"])  # the benchmark's data
    torch.manual_seed(cfg["seed"])
    model = Denoiser(build_unet(cfg, 1, 2), cfg, ["a", "b"])
    train_denoiser(cfg, x, y.numpy(), x, y.numpy(), ["a", "b"], tmp_path / "run", model=model)
    for (name, a), b in zip(model.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_flops_of_attention_are_counted_on_the_cpu():
    b, h, s, d = 2, 4, 16, 8
    q = torch.randn(b, h, s, d, requires_grad=True)
    flops = measure.count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    forward = 2 * (2 * b * h * s * s * d)  # q k^T and (softmax) v: two matmuls of 2 s^2 d FLOPs per head
    assert flops == forward * 3.5  # the backward is 2.5 forward passes (5 matmuls of the same size)


def test_flops_of_a_convolution_are_the_hand_count_and_an_mfu_above_one_is_refused():
    x, w = torch.randn(2, 8, 10, 10), torch.randn(16, 8, 3, 3)
    flops = measure.count_flops(lambda: F.conv2d(x, w, padding=1))
    assert flops == 2 * (2 * 10 * 10) * 16 * (8 * 3 * 3)  # 2 FLOPs per multiply-add, per output pixel and channel
    measure.check_mfu(pd.DataFrame({"mfu": [0.3, 1.0]}))
    with pytest.raises(RuntimeError, match="peak is below what a model achieved"):
        measure.check_mfu(pd.DataFrame({"mfu": [0.3, 1.37]}))

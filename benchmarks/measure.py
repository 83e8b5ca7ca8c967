"""What the benchmarks measure with: a clock that waits for the device, FLOP counts, this machine's matmul peak
(for model FLOP utilisation), peak GPU memory, and the image shapes of the tasks when their data is absent."""

import time

import torch
from torch.utils import flop_counter

from diffusion_classifier.device import default_device

# image channels of the study's tasks: the shapes of random stand-in data
CHANNELS = {"pneumonia": 1, "chexpert": 1, "melanoma": 3, "melanoma_balanced": 3, "dermamnist": 3, "isic2020": 3}
PRECISIONS = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_aten = torch.ops.aten
# torch's counter knows the GPU attention kernels but not the CPU one (it would count 0 FLOPs for attention)
_CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, out_val=None, **kwargs: (
        flop_counter.sdpa_flop_count(q, k, v)
    ),
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda g, q, k, v, *args, out_val=None, **kwargs: (
        flop_counter.sdpa_backward_flop_count(g, q, k, v)
    ),
}


def pick_device(name: str) -> torch.device:
    return default_device() if name == "auto" else torch.device(name)


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Seconds, once the work queued on the device is done (CUDA runs asynchronously)."""
    sync(device)
    return time.perf_counter()


def count_flops(fn) -> float:
    """FLOPs of one call of fn: matmuls, convolutions and attention, forward and backward (elementwise work,
    normalisation and the optimizer are not counted, as is usual for MFU)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, precision: str, n: int, repeat: int = 5) -> float:
    """FLOP/s of a large square matmul at the precision ('no' = fp32): this machine's practical peak. On CUDA the
    fp32 peak allows TF32, as cuDNN's fp32 convolutions do by default."""
    dtype = PRECISIONS[precision]
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        a @ b  # first use picks the kernel
        best = float("inf")
        for _ in range(repeat):
            t0 = clock(device)
            a @ b
            best = min(best, clock(device) - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n**3 / best


def reset_peak_memory(device: torch.device) -> int:
    """Start a peak-memory window; returns the bytes allocated now (the window's baseline)."""
    if device.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_memory_gb(device: torch.device, baseline: int = 0) -> float:
    """GPU memory allocated at most since reset_peak_memory, above its baseline (NaN on CPU)."""
    if device.type != "cuda":
        return float("nan")
    return (torch.cuda.max_memory_allocated(device) - baseline) / 1e9

"""What the benchmarks measure with: a clock that waits for the device, FLOP counts, this machine's compute peak
(for model FLOP utilisation), and peak GPU memory."""

import contextlib
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import flop_counter

from diffusion_classifier.device import default_device

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


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and its bf16 support (platform.processor() is empty on Linux)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
    cpu = torch.cpu
    return f"{model} (AMX {cpu._is_amx_tile_supported()}, AVX512-BF16 {cpu._is_avx512_bf16_supported()})"


def _best_seconds(device: torch.device, fn, repeat: int) -> float:
    fn()  # first use picks the kernel
    best = float("inf")
    for _ in range(repeat):
        t0 = clock(device)
        fn()
        best = min(best, clock(device) - t0)
    return best


def compute_peak(device: torch.device, precision: str, n: int, repeat: int = 5) -> float:
    """FLOP/s of the faster of a large square matmul and a large 3x3 convolution at the precision ('no' = fp32):
    this machine's practical peak, the denominator of MFU. Both, because the two go through different libraries
    that may not reach the same peak: on AMD CPUs torch's fp32 matmul (MKL) runs at about 0.4x the fp32 convolution
    (oneDNN, AVX-512), so a matmul-only peak gave conv nets an MFU above 1. On CUDA the fp32 peak allows TF32, as
    cuDNN's fp32 convolutions do by default."""
    dtype = PRECISIONS[precision]
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    c, side = n // 4, 32  # 3x3 conv, c -> c channels on a side x side map: 2 * 9 c^2 side^2 FLOPs
    x, w = torch.randn(1, c, side, side, device=device).to(dtype), torch.randn(c, c, 3, 3, device=device).to(dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        matmul = 2 * n**3 / _best_seconds(device, lambda: a @ b, repeat)
        conv = 2 * 9 * c**2 * side**2 / _best_seconds(device, lambda: F.conv2d(x, w, padding=1), repeat)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return max(matmul, conv)


def check_mfu(table, columns=("mfu",)):
    """Refuse a model FLOP utilisation above 1 (5 % allowed for timer noise between the peak's run and the model's):
    it means the peak was under-measured or the FLOPs over-counted, and every MFU of the table would mislead."""
    for col in columns:
        worst = table[col].max()
        if worst > 1.05:
            raise RuntimeError(
                f"{col} {worst:.2f} > 1: the measured peak is below what a model achieved; measure "
                "the peak longer or check the FLOP count"
            )


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

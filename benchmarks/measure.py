"""What the benchmarks measure with: a clock that waits for the device, FLOP counts, this machine's compute peak
(for model FLOP utilisation), and peak GPU memory."""

import time

import torch
import torch.nn.functional as F
from torch.utils import flop_counter

from diffusion_classifier.core.device import default_device

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


def _best_seconds(device: torch.device, fn, repeat: int) -> float:
    fn()  # first use picks the kernel
    best = float("inf")
    for _ in range(repeat):
        t0 = clock(device)
        fn()
        best = min(best, clock(device) - t0)
    return best


def peak_rates(device: torch.device, precision: str, n: int, repeat: int = 5) -> dict:
    """FLOP/s of three large kernels at the precision ('no' = fp32): an n x n matmul and a 3x3 convolution (n/4
    channels in and out, 32 x 32 map, padding 1: 2 * 9 (n/4)^2 32^2 FLOPs) in both memory formats. They go through
    different libraries that need not reach the same rate (on AMD CPUs torch's fp32 matmul is MKL's, the
    convolutions oneDNN's). On CUDA fp32 allows TF32, as cuDNN's fp32 convolutions do by default."""
    dtype = PRECISIONS[precision]
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    c, side = n // 4, 32
    x, w = torch.randn(1, c, side, side, device=device).to(dtype), torch.randn(c, c, 3, 3, device=device).to(dtype)
    last = torch.channels_last
    x_last, w_last = x.contiguous(memory_format=last), w.contiguous(memory_format=last)
    conv_flops = 2 * 9 * c**2 * side**2
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return {
            "matmul": 2 * n**3 / _best_seconds(device, lambda: a @ b, repeat),
            "conv3x3": conv_flops / _best_seconds(device, lambda: F.conv2d(x, w, padding=1), repeat),
            "conv3x3 channels_last": conv_flops
            / _best_seconds(device, lambda: F.conv2d(x_last, w_last, padding=1), repeat),
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def compute_peak(device: torch.device, precision: str, n: int, repeat: int = 5) -> float:
    """This machine's practical peak at the precision, the denominator of MFU: the fastest of peak_rates. Not the
    matmul alone: on this project's AMD CPU torch's fp32 matmul ran at 0.46x the fp32 convolution
    (results/benchmarks/peaks.csv), so a matmul-only peak gave conv nets an MFU above 1."""
    return max(peak_rates(device, precision, n, repeat).values())


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


if __name__ == "__main__":  # the three kernels' rates at fp32 and bf16: results/benchmarks/peaks.csv
    import pandas as pd

    from diffusion_classifier.core.device import cap_threads, device_name
    from diffusion_classifier.core.paths import results_dir

    threads, device = cap_threads(), default_device()
    n = 8192 if device.type == "cuda" else 2048
    rows = [
        {
            "device": device_name(device),
            "threads": threads,
            "precision": "fp32" if p == "no" else p,
            "kernel": k,
            "gflops": v / 1e9,
        }
        for p in ("no", "bf16")
        for k, v in peak_rates(device, p, n).items()
    ]
    out = results_dir() / "benchmarks" / ("peaks_gpu.csv" if device.type == "cuda" else "peaks.csv")
    pd.DataFrame(rows).round(1).to_csv(out, index=False)
    print(pd.DataFrame(rows).round(1).to_string(index=False), f"\nwritten: {out}", sep="\n")

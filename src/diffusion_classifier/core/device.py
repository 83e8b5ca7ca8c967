"""Device, precision and CPU thread choice, shared by training, scoring and the benchmarks."""

import contextlib
import os
import platform
from pathlib import Path

import torch


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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def forced_fp32() -> bool:
    """DC_NO_BF16=1: act as on a CPU without bf16 support (every 'auto' precision resolves to fp32)."""
    return os.environ.get("DC_NO_BF16", "") not in ("", "0")


def bf16_pays_off(device: torch.device) -> bool:
    """bf16 autocast is faster than fp32 on CPUs with AMX/AVX512-BF16 and on Ampere+ GPUs (by how much: the bf16 and
    fp32 engine rows of results/benchmarks/scoring.csv); elsewhere it emulates and is slower than fp32.
    DC_NO_BF16=1 answers no, as on a CPU without bf16 support: every 'auto' precision then runs in fp32 (how the
    README's fp32 wall time of run_all.sh is measured)."""
    if forced_fp32():
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return bool(cpu and (cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()))


def resolve_precision(setting: str, device: torch.device) -> str:
    """'auto' | 'bf16' | 'fp16' | 'no' -> the precision to use ('no' means fp32)."""
    if setting == "auto":
        return "bf16" if bf16_pays_off(device) else "no"
    if setting not in ("bf16", "fp16", "no"):
        raise ValueError(f"mixed_precision must be auto, bf16, fp16 or no, got {setting!r}")
    return setting


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cap_threads() -> int:
    """Limit this process's torch threads to its share of the cores: the usable cores divided by the processes
    launched on this machine (LOCAL_WORLD_SIZE, set by torchrun and accelerate launch). The launchers only pick
    1 thread when OMP_NUM_THREADS is unset, so an exported OMP_NUM_THREADS would otherwise oversubscribe; a
    lower setting is kept. Returns the number of threads."""
    share = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = min(torch.get_num_threads(), share)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads

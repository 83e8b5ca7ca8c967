"""Device and precision choice, shared by training and scoring."""
import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_pays_off(device: torch.device) -> bool:
    """bf16 autocast is ~2.5x faster on CPUs with AMX/AVX512-BF16 (measured in benchmarks/scoring.py) and on
    Ampere+ GPUs; elsewhere it emulates and is slower than fp32."""
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

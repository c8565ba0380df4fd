"""Which device a run uses and which dtype autocast computes in: one place for both."""
from __future__ import annotations

import re
from typing import Any

import torch

from plmkit.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "auto")


def cpuinfo(key: str) -> str | None:
    """The value of ``key`` ("flags", "vendor_id", ...) on the first processor of Linux's /proc/cpuinfo, or
    None (another OS, or no such line)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def is_device_name(name: object) -> bool:
    """Whether a setting names a device plmkit takes: 'auto', 'cpu', 'cuda' or 'cuda:N'."""
    return name in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", str(name)) is not None


def resolve_device(name: str | torch.device = "auto", cpu_only: bool = False) -> torch.device:
    """'auto' is the GPU when there is one, else the CPU; any other name is checked to exist.
    `cpu_only` (a model whose kernels are CPU kernels: int8 layers): 'auto' is the CPU, another
    device an error."""
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() and not cpu_only else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"device={name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if cpu_only and device.type != "cpu":
        raise ConfigError(f"device={str(name)!r}: this model is quantized to int8, whose kernels run on the CPU only; "
                          "use device='cpu' (--device cpu)")
    if device.type == "cuda" and not torch.cuda.is_available() and not isinstance(name, torch.device):
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use device='cpu' or 'auto'")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32. 'auto' is bf16 on GPUs that support it, else fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "fp32" or (precision == "auto" and not gpu_bf16):
        return None
    if device.type == "cuda" and not gpu_bf16:
        raise ConfigError("precision='bf16' but this GPU has no bfloat16 support; use precision='fp32'")
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` to `dtype` on `device`; for dtype None (fp32), autocast switched off."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def model_device(model) -> torch.device:
    """Where a model's inputs go: its parameters' device (the CPU for one without parameters, an
    onnxruntime `OrtModel`)."""
    return next(model.parameters(), torch.empty(0)).device


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The tensors of `batch` on `device`; on a GPU copied from pinned (page-locked) memory without waiting,
    so the copies overlap the work queued before them (written for GPUs, not run here)."""
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin and v.device.type == "cpu" else v).to(device, non_blocking=True)
            if torch.is_tensor(v) else v for k, v in batch.items()}

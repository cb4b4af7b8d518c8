"""Choosing the device and the arithmetic precision, in one place for train, evaluate and predict."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "32", "bf16", "16")


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` is the first CUDA device when there is one, else the CPU; `cuda[:N]` must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device should be auto, cpu or cuda[:N], got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) found")
    elif device.type != "cpu":
        raise ValueError(f"--device should be auto, cpu or cuda[:N], got {spec!r}")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """None means full float32. `auto` is bf16 on GPUs that support it, fp16 on older ones, fp32 on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision should be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision when a dtype is given, a no-op otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)

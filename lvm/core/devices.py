"""Parsing the device, precision and dtype options every command takes (`device=auto`, `precision=bf16`,
`dtype=fp32`) into torch objects, with errors that name the option."""

from __future__ import annotations

import os

import torch

DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def parse_dtype(name: str | None, option: str = "dtype") -> torch.dtype:
    """A config's dtype name (fp32 / bf16 / fp16, or torch's float32 / bfloat16 / float16; None = fp32)."""
    if name is None:
        return torch.float32
    if str(name) not in DTYPES:
        raise ValueError(f"{option}: {name!r} is not one of fp32, bf16, fp16 (or float32, bfloat16, float16)")
    return DTYPES[str(name)]


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """ "auto": this process's GPU (LOCAL_RANK) when there is one, else the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """ "auto": bf16 autocast on CUDA, fp32 elsewhere (bf16 on CPUs without bf16 units is slower)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}; got {precision!r}")
    return PRECISIONS[precision]

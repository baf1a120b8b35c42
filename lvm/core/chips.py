"""Peak FLOP/s of one accelerator, dense, per dtype: Lightning's table (NVIDIA V100 … H100, TPU v2–v5e) plus
`PEAK_FLOPS` for chips it lacks. Used for MFU (`lvm.training.throughput`) and for planning compute without the
chip at hand (`lvm.plan gpu=h100`).

Lightning's tables are imported inside the functions: importing `lightning_fabric` takes ~3 s here, which
`python -m lvm.plan` and `lvm.analysis` would otherwise pay on every start whether or not a chip is named.
"""

from __future__ import annotations

import torch

# Dense bf16 peak FLOP/s of one device, from the vendors' data sheets, for chips Lightning does not list.
PEAK_FLOPS: dict[str, float] = {
    # NVIDIA H200 NVL / SXM, bf16 dense (835.5 and 989.5 TFLOP/s); Lightning's "h200" entries carry the data
    # sheet's with-sparsity figures (1.7e15 and 2e15), which would halve MFU. NVL first: names are matched in order.
    "h200nvl": 835.5e12,
    "h200": 989.5e12,
    "b200": 2.25e15,  # NVIDIA B200 (HGX), bf16 dense
    "gb200": 2.5e15,  # NVIDIA GB200 NVL72, per GPU, bf16 dense
    "mi300x": 1.307e15,  # AMD Instinct MI300X, bf16 dense
    "v5p": 459e12,  # TPU v5p
    "v6e": 918e12,  # TPU v6e (Trillium)
}


def lookup_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device in `dtype` from `PEAK_FLOPS` or Lightning's table; None when unknown."""
    from lightning_fabric.utilities.throughput import get_available_flops

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        for chip, flops in PEAK_FLOPS.items():
            if chip in name.replace(" ", "").replace("-", ""):
                return flops if dtype in (torch.bfloat16, torch.float16) else None
    if device.type in ("cuda", "xla"):
        return get_available_flops(device, dtype)
    return None


def _chip_tables() -> dict[str, dict]:
    """Every chip we know a peak for → {dtype: FLOP/s}: Lightning's GPU and TPU tables, then PEAK_FLOPS (bf16/fp16)."""
    from lightning_fabric.utilities.throughput import _CUDA_FLOPS, _TPU_FLOPS

    # Lightning's h200 rows are with-sparsity figures; PEAK_FLOPS has the dense ones.
    tables = {name: dict(flops) for name, flops in _CUDA_FLOPS.items() if not name.startswith("h200")}
    tables |= {f"tpu {name}": {torch.bfloat16: flops} for name, flops in _TPU_FLOPS.items()}
    tables |= {name: {torch.bfloat16: flops, torch.float16: flops} for name, flops in PEAK_FLOPS.items()}
    return tables


def chip_peak_flops(chip: str, dtype: torch.dtype = torch.bfloat16) -> tuple[str, float]:
    """(the table's name for `chip`, its dense peak FLOP/s in `dtype`), for planning compute without the chip
    at hand (`lvm.plan gpu=h100`). `chip` is matched without case, dashes or spaces, first exactly and then as
    a prefix; a prefix that several parts share picks the SXM part ("h100" → "h100 sxm"), the usual data-centre
    form. Unknown chips and dtypes raise ValueError listing what is known."""
    tables = _chip_tables()

    def squash(name: str) -> str:
        return "".join(ch for ch in name.lower() if ch.isalnum())

    wanted = squash(chip)
    matches = [name for name in tables if squash(name) == wanted] or [
        name for name in tables if squash(name).startswith(wanted) or squash(name).startswith("tpu" + wanted)
    ]
    if len(matches) > 1:
        matches = [name for name in matches if "sxm" in name] or matches
    if len(matches) != 1:
        what = "matches several chips" if matches else "is not a chip with a known peak"
        raise ValueError(f"gpu={chip!r} {what}; known: {', '.join(sorted(matches or tables))}")
    name = matches[0]
    if dtype not in tables[name]:
        known = ", ".join(str(d).replace("torch.", "") for d in tables[name])
        raise ValueError(f"no {str(dtype).replace('torch.', '')} peak for {name} (known: {known})")
    return name, float(tables[name][dtype])

"""Throughput and MFU: Lightning's ThroughputMonitor with a peak-FLOPs figure for every device.

MFU = (model FLOPs per token × tokens per second per device) / peak FLOP/s of one device, where the
model FLOPs per token are `ModelConfig.flops_per_token(T)` = 6·N + 12·L·d·T (PaLM appendix B; the
causal variant with the attention term halved is logged as train/flops_spent_causal).

The peak comes, in order, from:
1. `peak_flops_per_device` when given: a number, or "measure" to time a dense matmul on the device at
   setup (the honest choice on CPUs and chips no table knows; MFU is then relative to that matmul);
2. `PEAK_FLOPS` below, for chips that Lightning's table lacks;
3. Lightning's own table (`lightning_fabric.utilities.throughput`): NVIDIA V100 … H200 and TPU v2–v5e
   per dtype, dense (no sparsity).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import (
    _CUDA_FLOPS,
    _TPU_FLOPS,
    _plugin_to_compute_dtype,
    get_available_flops,
)
from pytorch_lightning.callbacks import ThroughputMonitor

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


def measure_matmul_flops(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5
) -> float:
    """FLOP/s of the best of `repeats` dense (size × size) @ (size × size) products on `device`."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first product warms up kernels and caches
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def lookup_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device in `dtype` from `PEAK_FLOPS` or Lightning's table; None when unknown."""
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


class LVMThroughputMonitor(ThroughputMonitor):
    """ThroughputMonitor that also knows the peak of chips missing from Lightning's table, or takes one.

    Logs train/device/{batches,samples,items,flops}_per_sec (items = tokens) and train/device/mfu.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int],
        length_fn: Callable[[Any], int] | None = None,
        peak_flops_per_device: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size_fn=batch_size_fn, length_fn=length_fn, **kwargs)
        if isinstance(peak_flops_per_device, str) and peak_flops_per_device != "measure":
            raise ValueError(
                f"peak_flops_per_device must be a number, 'measure' or null, not {peak_flops_per_device!r}"
            )
        self.peak_flops_per_device = peak_flops_per_device

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        device, dtype = trainer.strategy.root_device, _plugin_to_compute_dtype(trainer.precision_plugin)
        if self.peak_flops_per_device == "measure":
            peak = measure_matmul_flops(device, dtype)
        elif self.peak_flops_per_device is not None:
            peak = float(self.peak_flops_per_device)
        else:
            peak = lookup_peak_flops(device, dtype)
        self.available_flops = peak
        for throughput in self._throughputs.values():  # built by the parent with its own lookup
            throughput.available_flops = peak

"""Throughput and MFU: Lightning's ThroughputMonitor with a peak-FLOPs figure for every device.

MFU = (model FLOPs per token × tokens per second per device) / peak FLOP/s of one device, where the
model FLOPs per token are `ModelConfig.flops_per_token(T)` = 6·N + 12·L·d·T (PaLM appendix B; the
causal variant with the attention term halved is logged as train/flops_spent_causal).

The peak comes, in order, from:
1. `peak_flops_per_device` when given: a number, or "measure" to time a dense matmul on the device at
   setup (the honest choice on CPUs and chips no table knows; MFU is then relative to that matmul);
2. `lvm.core.chips.PEAK_FLOPS`, for chips that Lightning's table lacks;
3. Lightning's own table (`lightning_fabric.utilities.throughput`): NVIDIA V100 … H200 and TPU v2–v5e
   per dtype, dense (no sparsity).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import _plugin_to_compute_dtype
from pytorch_lightning.callbacks import ThroughputMonitor

from lvm.core.chips import lookup_peak_flops


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

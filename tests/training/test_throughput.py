"""Peak FLOP/s for MFU: given, measured, or looked up."""

import pytest
import pytorch_lightning as pl
from pytorch_lightning.demos.boring_classes import BoringModel

from lvm.training.throughput import LVMThroughputMonitor, measure_matmul_flops


def test_measured_matmul_rate_is_the_flops_of_a_timed_product():
    rate = measure_matmul_flops("cpu", size=256, repeats=2)
    # 2·n³ FLOPs in more than zero and less than a second per product on any CPU
    assert 2 * 256**3 < rate < 1e13


@pytest.mark.parametrize("peak", [2.5e11, "measure"])
def test_the_monitor_uses_the_given_or_measured_peak(tmp_path, peak):
    monitor = LVMThroughputMonitor(batch_size_fn=len, peak_flops_per_device=peak)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=1,
        callbacks=[monitor],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(BoringModel())
    if peak == "measure":
        assert monitor.available_flops > 1e8
    else:
        assert monitor.available_flops == peak
    assert all(t.available_flops == monitor.available_flops for t in monitor._throughputs.values())


def test_an_unknown_peak_word_is_refused():
    with pytest.raises(ValueError, match="peak_flops_per_device must be a number, 'measure' or null, not 'auto'"):
        LVMThroughputMonitor(batch_size_fn=len, peak_flops_per_device="auto")

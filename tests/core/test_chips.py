"""Peak FLOP/s per chip: Lightning's table, our additions, name matching, and an import that stays light."""

import subprocess
import sys

import pytest
import torch

from lvm.core.chips import PEAK_FLOPS, chip_peak_flops, lookup_peak_flops
from tests.conftest import ROOT


def test_names_match_lightnings_table_and_ours():
    assert chip_peak_flops("h100") == ("h100 sxm", 989.4e12)  # Lightning's table, dense bf16
    assert chip_peak_flops("H100-PCIe")[0] == "h100 pcie"
    assert chip_peak_flops("a100", torch.float32)[1] == pytest.approx(19.5e12)
    assert chip_peak_flops("h200") == ("h200", PEAK_FLOPS["h200"])  # ours: Lightning's h200 rows are sparse figures
    with pytest.raises(ValueError, match="'h9000' is not a chip with a known peak; known: a100"):
        chip_peak_flops("h9000")
    with pytest.raises(ValueError, match="no float32 peak for mi300x"):
        chip_peak_flops("mi300x", torch.float32)


def test_cpus_have_no_table_entry():
    assert lookup_peak_flops(torch.device("cpu"), torch.float32) is None


def test_planning_imports_no_lightning():
    """`python -m lvm.plan` and `lvm.analysis` start without Lightning's ~3 s import (the tables load on use)."""
    lightning = ("pytorch_lightning", "lightning_fabric")
    code = f"import sys, lvm.plan, lvm.analysis; print(sorted(m for m in {lightning} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"

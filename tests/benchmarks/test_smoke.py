"""Every benchmark runs the one documented way (`python -m benchmarks.<name>` from the repository root,
no sys.path edits) in its smallest mode, and ends with its headline line. Speed is not judged here:
the numbers of such tiny runs mean nothing; the README's tables come from the default runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADLINE = r"^{name}: \d+(\.\d+)?x vs .+ \(target \d+(\.\d+)?x\)$"
SMALLEST = {
    "bench_data": ["--sources", "1", "--sentences-per-source", "24", "--batches", "4", "--warmup-batches", "1",
                   "--jsonl-passes", "1", "--repeats", "1", "--train-seq-len", "256", "--train-steps", "1"],
    "bench_generate": ["--sizes", "vqlm_debug", "--batch-sizes", "1", "--context-images", "1", "--rounds", "1"],
    "bench_tokenizer": ["--images", "2", "--decode-images", "1", "--batch-size", "2", "--repeats", "1",
                        "--num-workers", "0"],
    "bench_tokenizer_learning": ["--steps", "3", "--quantize-start", "1", "--videos", "2", "--images", "8",
                                 "--val-videos", "1", "--networks", "reference", "ours", "ours-without-groupnorm"],
    "bench_train": ["--hidden-size", "64", "--intermediate-size", "176", "--layers", "1", "--heads", "2",
                    "--seq-len", "256", "--batch-size", "1", "--steps", "2", "--warmup", "1", "--rounds", "1"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_each_benchmark_runs_as_documented_and_prints_its_headline(name, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # only what -m gives
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *SMALLEST[name]], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.match(HEADLINE.format(name=name), last), last
    assert "|---" in result.stdout  # the Markdown table the README quotes


@pytest.mark.slow
def test_the_gpu_check_dry_run_needs_nothing_a_bare_cuda_machine_lacks():
    # The device machine has torch, Lightning, transformers and OpenCV, not these: the check must not need them.
    blocked = ("hydra", "omegaconf", "webdataset", "av", "gradio")
    script = (
        "import runpy, sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "sys.argv = ['gpu_check', '--dry-run']\n"
        "runpy.run_module('benchmarks.gpu_check', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| what | rate | MFU | peak memory (GB) |"
    assert [row.split(" | ")[0] for row in table[1:]] == [
        "| train vqlm_debug, seq 256, bf16, sdpa",
        "| decode vqlm_debug, batch 1, ours bf16",
        "| decode vqlm_debug, batch 1, ours int8",
        "| decode vqlm_debug, batch 1, transformers bf16",
    ]

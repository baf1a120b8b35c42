"""A real tiny scaling sweep, trained once per session through the `python -m lvm.train -m` CLI:
3 widths × 6 steps of the demo shards (about 40 s on 2 cores)."""

from pathlib import Path

import pytest

from tests.cli import run_train_cli
from tests.conftest import DEMO_SHARDS

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = {"w64": 64, "w96": 96, "w128": 128}  # conf/width/<name>.yaml: 2 layers, 4 heads, SwiGLU 2×width
MAX_STEPS, BATCH_SIZE, SEQ_LEN = 6, 8, 128  # conf/data/demo.yaml's batch and sequence length


@pytest.fixture(scope="session")
def tiny_sweep(demo_data_dir, tmp_path_factory) -> Path:
    """The sweep folder (read-only for tests: copy it to break it): jobs 0, 1, 2 = widths 64, 96, 128."""
    root = tmp_path_factory.mktemp("scaling_sweep")
    sweep = root / "sweep"
    run_train_cli(
        "-m",
        "experiment=demo",
        *DEMO_SHARDS,
        "+sweep=scaling_tiny",
        f"paths.data_dir={demo_data_dir}",
        f"+width={','.join(WIDTHS)}",
        f"trainer.max_steps={MAX_STEPS}",
        f"trainer.val_check_interval={MAX_STEPS}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "scheduler.warmup_steps=2",
        f"hydra.sweep.dir={sweep}",
        cwd=root,
    )
    return sweep

"""DDP and FSDP2 with 2 CPU processes (gloo) train exactly as 1 process on the same global batches,
and FSDP2's sharded checkpoint folders resume and load."""

import csv
import os
from pathlib import Path

import pytest
import torch

from lvm.core.atomic_files import replace_directory, resolve_directory
from lvm.interop.pretrained import read_pretrained_state_dict
from lvm.model import LLaMA, ModelConfig
from tests.cli import run_train_cli

ROOT = Path(__file__).resolve().parents[2]
# Random-token global batches of 4 sentences × 32 tokens (ids < 8192: the full LVM vocabulary), the same for any
# number of processes.
COMMON = [
    "experiment=demo",
    "model.vocab_size=8292",
    f"hydra.searchpath=[file://{ROOT / 'tests' / 'conf'}]",
    "data=fixed",
    "logger=csv",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.val_check_interval=100",
    "scheduler.warmup_steps=2",
    "scheduler.decay_steps=8",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "optimizer=adamw",  # FSDP2 shards: Muon (the demo's optimizer) refuses them
    "optimizer.lr=3e-3",
]
TWO_CPU_PROCESSES = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def train_cli(out: Path, *overrides: str) -> str:
    result = run_train_cli(*COMMON, f"hydra.run.dir={out}", *overrides, cwd=out.parent)
    return result.stdout + result.stderr


def losses(out: Path) -> dict[int, float]:
    with open(out / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


@pytest.mark.slow
def test_ddp_and_fsdp2_match_one_process_and_fsdp2_resumes(tmp_path):
    single, ddp, fsdp = tmp_path / "single", tmp_path / "ddp", tmp_path / "fsdp"
    train_cli(single, "trainer=cpu", "trainer.max_steps=6")
    log = train_cli(ddp, "trainer=ddp", *TWO_CPU_PROCESSES, "trainer.max_steps=4")
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    log = train_cli(fsdp, "trainer=fsdp", *TWO_CPU_PROCESSES, "trainer.max_steps=4")
    assert "Starting with 2 processes" in log

    reference = losses(single)
    assert sorted(reference) == list(range(6)) and reference[5] < reference[0]
    for name, run in (("ddp", ddp), ("fsdp", fsdp)):
        got = losses(run)
        assert sorted(got) == [0, 1, 2, 3], name
        for step in got:  # the global-batch loss, averaged over the 2 ranks' halves
            assert got[step] == pytest.approx(reference[step], rel=2e-5), (name, step)

    # FSDP2 checkpoints are folders with one shard per rank; they hold the 1-process run's weights.
    folder = fsdp / "checkpoints" / "step0000004.ckpt"
    assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    model = LLaMA(ModelConfig.from_name("vqlm_debug", image_positions=64))  # experiment=demo's model
    sharded = read_pretrained_state_dict(folder, model)
    single_state = read_pretrained_state_dict(single / "checkpoints" / "step0000004.ckpt", model)
    assert sharded.keys() == single_state.keys()
    for name in sharded:
        # atol 1e-5: after 4 Adam steps at lr 3e-3, a weight whose gradient is near zero moves by up to lr per step,
        # so summation-order noise in that gradient (2 ranks against 1) shows as a few 1e-6 differences.
        torch.testing.assert_close(sharded[name], single_state[name], rtol=1e-4, atol=1e-5)

    # Resuming the FSDP2 run from its last folder continues with the uninterrupted run's losses.
    train_cli(fsdp, "trainer=fsdp", *TWO_CPU_PROCESSES, "trainer.max_steps=6", "ckpt_path=last")
    resumed = losses(fsdp)
    for step in (4, 5):
        assert resumed[step] == pytest.approx(reference[step], rel=2e-5), step


@pytest.mark.slow
def test_muon_under_ddp_matches_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    # the later optimizer= wins over COMMON's adamw (COMMON's lr=3e-3 stays: AdamW's half)
    train_cli(single, "trainer=cpu", "optimizer=muon", "trainer.max_steps=4")
    train_cli(ddp, "trainer=ddp", *TWO_CPU_PROCESSES, "optimizer=muon", "trainer.max_steps=4")
    for run in (single, ddp):  # LearningRateMonitor names the optimizer's class in its columns
        assert "lr-MuonWithAdamW/pg1" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    reference, got = losses(single), losses(ddp)
    assert sorted(got) == sorted(reference) == [0, 1, 2, 3] and reference[3] < reference[0]
    for step in got:
        assert got[step] == pytest.approx(reference[step], rel=2e-5), step


def test_replace_directory_keeps_a_whole_checkpoint_at_every_instant(tmp_path):
    target, new = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.tmp"
    target.mkdir()
    (target / "meta.pt").write_text("old")
    new.mkdir()
    (new / "meta.pt").write_text("new")
    replace_directory(new, target)
    assert (target / "meta.pt").read_text() == "new" and not new.exists()
    assert not (tmp_path / "last.ckpt.old").exists()

    # A kill between the two renames leaves only last.ckpt.old: resolving puts it back.
    os.replace(target, tmp_path / "last.ckpt.old")
    assert resolve_directory(target) == target and (target / "meta.pt").read_text() == "new"

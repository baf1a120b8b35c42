"""`lvm.train` end to end on tiny shards: fit, resume, a Hydra multirun sweep, DDP with 2 CPU processes."""

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lvm.train import train
from tests.cli import run_train_cli
from tests.conftest import DEMO_SHARDS

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "experiment=demo",
    *DEMO_SHARDS,
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "scheduler.warmup_steps=2",
    "scheduler.decay_steps=8",
]


def compose_train(data_dir: Path, output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train", overrides=[f"paths.data_dir={data_dir}", f"paths.output_dir={output_dir}", *FAST, *overrides]
        )


def logged_losses(output_dir: Path) -> dict[int, float]:
    """train/loss by step from the CSV logger's metrics.csv (every step: log_every_n_steps=1)."""
    with open(output_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def test_fit_writes_checkpoints_logs_and_lowers_the_loss(demo_data_dir, tmp_path):
    cfg = compose_train(
        demo_data_dir, tmp_path, "trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=4"
    )
    metrics = train(cfg)
    assert {"val/loss", "val/ppl", "train/loss"} <= set(metrics) and metrics["data/skipped_shards"] == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step0000004.ckpt",
        "step0000008.ckpt",
    ]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8
    assert "MixtureDataModule" in checkpoint  # the data position, restored on resume


def test_resume_from_last_checkpoint_continues_the_same_run(demo_data_dir, tmp_path):
    steps = ["logger=csv", "callbacks.model_checkpoint.every_n_train_steps=4"]
    full = tmp_path / "full"
    train(compose_train(demo_data_dir, full, "trainer.max_steps=8", *steps))

    cut = tmp_path / "cut"
    train(compose_train(demo_data_dir, cut, "trainer.max_steps=4", *steps))  # "killed" after step 4
    os.replace(cut / "csv" / "metrics.csv", cut / "first_half.csv")
    train(compose_train(demo_data_dir, cut, "trainer.max_steps=8", "ckpt_path=last", *steps))

    expected, resumed = logged_losses(full), logged_losses(cut)
    assert sorted(resumed) == [4, 5, 6, 7]  # steps 0-3 were not retrained
    for step in resumed:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5), step


def test_multirun_sweep_runs_every_point(demo_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run_train_cli(
        "-m",
        *FAST,
        f"paths.data_dir={demo_data_dir}",
        "trainer.max_steps=4",
        "optimizer.lr=1e-3,3e-3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ("0.001", "0.003")):
        assert (job / "checkpoints" / "last.ckpt").exists()
        assert f"optimizer.lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()


def test_ddp_with_two_cpu_processes(demo_data_dir, tmp_path):
    out = tmp_path / "ddp"
    result = run_train_cli(
        *FAST,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.max_steps=4",
        f"paths.data_dir={demo_data_dir}",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4


def recorded_batches(path: Path) -> list[tuple[int, str]]:
    return [(int(step), digest) for step, digest in (line.split() for line in path.read_text().splitlines())]


def test_sigkill_mid_run_then_resume_sees_every_batch_once_and_the_same_losses(demo_data_dir, tmp_path):
    common = [
        *FAST,
        f"paths.data_dir={demo_data_dir}",
        "logger=csv",
        "trainer.max_steps=12",
        "callbacks.model_checkpoint.every_n_train_steps=4",
    ]
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_train_cli(
        *common,
        f"hydra.run.dir={full}",
        "+callbacks.record._target_=tests.callbacks.RecordBatches",
        f"+callbacks.record.path={tmp_path / 'full.txt'}",
        cwd=tmp_path,
    )

    env = {**os.environ, "PYTHONPATH": str(ROOT), "LVM_ROOT": str(tmp_path)}
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lvm.train",
            *common,
            f"hydra.run.dir={cut}",
            "+callbacks.record._target_=tests.callbacks.RecordBatches",
            f"+callbacks.record.path={tmp_path / 'cut.txt'}",
            "+callbacks.kill._target_=tests.callbacks.KillAtStep",
            "+callbacks.kill.step=10",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # died of SIGKILL at step 10, after the step-8 checkpoint
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    run_train_cli(
        *common,
        f"hydra.run.dir={cut}",
        "ckpt_path=last",
        "+callbacks.record._target_=tests.callbacks.RecordBatches",
        f"+callbacks.record.path={tmp_path / 'resumed.txt'}",
        cwd=tmp_path,
    )

    uninterrupted = recorded_batches(tmp_path / "full.txt")
    before_kill, after_resume = recorded_batches(tmp_path / "cut.txt"), recorded_batches(tmp_path / "resumed.txt")
    assert [step for step, _ in uninterrupted] == list(range(12))
    # Steps 0-9 were trained; step 10's batch was drawn, then the process died.
    assert before_kill == uninterrupted[:11]
    # Resumed at the step-8 checkpoint: steps 8-11 see exactly the uninterrupted run's batches, so no
    # sample is repeated or skipped (steps 8 and 9 are redone because their update was never saved).
    assert after_resume == uninterrupted[8:]
    expected, resumed = logged_losses(full), logged_losses(cut)
    assert sorted(resumed) == [8, 9, 10, 11]
    for step in resumed:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5), step


def test_throughput_tokens_and_flops_are_logged_from_the_model_size(demo_data_dir, tmp_path):
    cfg = compose_train(
        demo_data_dir,
        tmp_path,
        "logger=csv",
        "trainer.max_steps=6",
        "callbacks.throughput_monitor.window_size=2",
        "callbacks.throughput_monitor.peak_flops_per_device=1e11",
    )
    train(cfg)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    config = instantiate(cfg.model)  # the demo's model
    flops_per_token = config.flops_per_token(cfg.data.seq_len)
    seen = {int(r["step"]): float(r["train/tokens_seen"]) for r in rows if r.get("train/tokens_seen")}
    assert seen == {step: (step + 1) * tokens_per_step for step in range(6)}
    spent = {int(r["step"]): float(r["train/flops_spent"]) for r in rows if r.get("train/flops_spent")}
    assert spent[5] == pytest.approx(6 * tokens_per_step * flops_per_token, rel=1e-6)
    causal = {int(r["step"]): float(r["train/flops_spent_causal"]) for r in rows if r.get("train/flops_spent_causal")}
    # the causal count skips half of the 12·L·d·T attention term
    halved = 6 * config.num_parameters + 6 * config.num_layers * config.hidden_size * cfg.data.seq_len
    assert causal[5] == pytest.approx(6 * tokens_per_step * halved, rel=1e-6) and causal[5] < spent[5]
    rates = [r for r in rows if r.get("train/device/items_per_sec")]  # ThroughputMonitor's keys
    assert rates
    for r in rates:  # FLOP/s is tokens/s times the model's FLOPs per token
        assert float(r["train/device/items_per_sec"]) > 0
        assert float(r["train/device/flops_per_sec"]) == pytest.approx(
            float(r["train/device/items_per_sec"]) * flops_per_token, rel=1e-3
        )
        # MFU against the peak given in the config (on GPUs/TPUs it comes from lvm/training/throughput.py's table)
        assert float(r["train/device/mfu"]) == pytest.approx(float(r["train/device/flops_per_sec"]) / 1e11, rel=1e-6)


def test_scaling_sweep_runs_every_width_and_budget(demo_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    # The grid of conf/sweep/scaling_tiny.yaml, cut down on the command line (which wins over the
    # config's sweeper params): 2 widths × 2 budgets.
    run_train_cli(
        "-m",
        *FAST,
        "+sweep=scaling_tiny",
        f"paths.data_dir={demo_data_dir}",
        "+width=w64,w128",
        "trainer.max_steps=2,3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    seen = set()
    for job in jobs:
        checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
        seen.add((checkpoint["hyper_parameters"]["model_config"]["hidden_size"], checkpoint["global_step"]))
    assert seen == {(64, 2), (64, 3), (128, 2), (128, 3)}


def assert_option_keeps_the_losses(demo_data_dir: Path, tmp_path: Path, option: str, rel: float) -> None:
    """Train 3 steps with `<option>=false` and `=true`; the logged loss must agree at every step."""
    for flag in ("false", "true"):
        train(compose_train(demo_data_dir, tmp_path / flag, "logger=csv", "trainer.max_steps=3", f"{option}={flag}"))
    off, on = logged_losses(tmp_path / "false"), logged_losses(tmp_path / "true")
    assert sorted(off) == [0, 1, 2]
    for step in off:
        assert on[step] == pytest.approx(off[step], rel=rel), step


def test_activation_checkpointing_option_trains_to_the_same_losses(demo_data_dir, tmp_path):
    assert_option_keeps_the_losses(demo_data_dir, tmp_path, "activation_checkpointing", rel=1e-5)


def test_a_kill_during_a_checkpoint_save_leaves_the_previous_one_and_the_run_resumes(demo_data_dir, tmp_path):
    common = [
        *FAST,
        f"paths.data_dir={demo_data_dir}",
        "logger=csv",
        "trainer.max_steps=6",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LVM_ROOT": str(tmp_path)}
    # Saves: 1 = step0000002.ckpt, 2 = last.ckpt (step 2), 3 = step0000004.ckpt, 4 = last.ckpt (step 4) ← killed
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lvm.train",
            *common,
            "trainer.plugins=[{_target_:tests.callbacks.KillMidSave,at_save:4}]",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    (partial,) = checkpoints.glob(".last.ckpt.*.tmp")  # the half-written step-4 save, never renamed
    with pytest.raises((RuntimeError, pickle.UnpicklingError, EOFError)):  # whichever the cut leaves
        torch.load(partial, weights_only=True)
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2

    run_train_cli(*common, "ckpt_path=last", cwd=tmp_path)
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 6
    assert not list(checkpoints.glob(".*.tmp"))  # the next save cleared the leftover
    assert sorted(logged_losses(tmp_path / "run"))[-4:] == [2, 3, 4, 5]  # steps 2-5 trained after the resume


@pytest.mark.slow
def test_compiled_blocks_train_to_the_same_losses(demo_data_dir, tmp_path):
    assert_option_keeps_the_losses(demo_data_dir, tmp_path, "compile.enabled", rel=1e-4)
    checkpoint = torch.load(tmp_path / "true" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "model.layers.0.self_attn.q_proj.weight" in checkpoint["state_dict"]  # names unchanged by compiling


def test_finetune_starts_from_the_pretrained_weights_with_the_smaller_lr(demo_data_dir, tmp_path):
    train(
        compose_train(
            demo_data_dir, tmp_path / "pretrain", "logger=csv", "trainer.max_steps=12", "scheduler.decay_steps=12"
        )
    )
    pretrained = tmp_path / "pretrain" / "checkpoints" / "last.ckpt"
    pretrain_losses = logged_losses(tmp_path / "pretrain")

    # vqlm_debug's blocks with the vocabulary and image-position table the demo experiment pretrained them with
    finetune = [
        "experiment=finetune",
        "data=demo",
        "model=vqlm_debug",
        "model.vocab_size=356",
        "model.image_positions=64",
        *DEMO_SHARDS,
        "trainer.max_steps=2",
        "scheduler.warmup_steps=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    cfg = compose_train(demo_data_dir, tmp_path / "finetune", "logger=csv", *finetune, f"init_from={pretrained}")
    assert cfg.optimizer.lr == pytest.approx(1.5e-5) and cfg.task_name == "finetune"
    train(cfg)
    finetuned = logged_losses(tmp_path / "finetune")
    # The first finetuning step already has the pretrained model's loss, far below a fresh init's.
    assert finetuned[0] < pretrain_losses[0] - 0.3
    assert finetuned[0] == pytest.approx(pretrain_losses[11], abs=0.3)
    with open(tmp_path / "finetune" / "csv" / "metrics.csv") as f:
        lrs = [float(r["lr-AdamW"]) for r in csv.DictReader(f) if r.get("lr-AdamW")]
    assert max(lrs) == pytest.approx(1.5e-5)
    checkpoint = torch.load(tmp_path / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2  # a new run: its own steps, not the pretraining's

    with pytest.raises(ValueError, match="either init_from .* or ckpt_path"):
        train(compose_train(demo_data_dir, tmp_path / "both", *finetune, f"init_from={pretrained}", "ckpt_path=last"))
    mis_shaped = r"last\.ckpt: weights do not fit .*mis-shaped: \['embed_image_positions.*'embed_tokens"
    with pytest.raises(ValueError, match=mis_shaped):
        train(compose_train(demo_data_dir, tmp_path / "wrong", *finetune, "+width=w64", f"init_from={pretrained}"))

"""Multi-node SLURM through hydra-submitit-launcher: `+slurm=default` composes with the distributed trainers and
the Trainer's num_nodes/devices follow the launcher's nodes/tasks; the sbatch script the plugin would submit is
rendered without a cluster (stub sbatch/srun); a 2-point sweep runs through the plugin's local mode
(hydra/launcher=submitit_local) end to end."""

import os
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from tests.cli import run_train_cli
from tests.test_train import FAST

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
submitit = pytest.importorskip("submitit")

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_slurm(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            return_hydra_config=True,
            overrides=[
                f"paths.output_dir={tmp_path}",
                f"paths.data_dir={tmp_path}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
                "+slurm=default",
                *overrides,
            ],
        )


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_launcher_and_trainer_agree_on_nodes_and_devices(tmp_path, trainer):
    cfg = compose_slurm(tmp_path, f"trainer={trainer}", "slurm.nodes=4", "slurm.gpus_per_node=4", "slurm.partition=gpu")
    launcher = cfg.hydra.launcher
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "lvm_slurm"
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (4, 4, 4)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (4, 4)
    assert launcher.partition == "gpu" and launcher.cpus_per_task == 10 and launcher.timeout_min == 4320


def test_experiment_trainer_is_overridden_by_the_allocation(tmp_path):
    cfg = compose_slurm(tmp_path, "experiment=lvm_7b", "slurm.nodes=8")
    assert cfg.hydra.runtime.choices.trainer == "fsdp"  # the experiment's choice stands
    assert (
        (cfg.trainer.num_nodes, cfg.trainer.devices)
        == (8, 8)
        == (cfg.hydra.launcher.nodes, cfg.hydra.launcher.tasks_per_node)
    )


def test_trainer_reads_the_slurm_environment_the_launcher_allocates(tmp_path, monkeypatch):
    """Rank 13 of a 2-node × 8-task job, as srun would start it: Lightning picks SLURMEnvironment and agrees."""
    cfg = compose_slurm(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "slurm.nodes=2", "slurm.gpus_per_node=8")
    for key, value in {
        "SLURM_NTASKS": "16",
        "SLURM_NTASKS_PER_NODE": "8",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_PROCID": "13",
        "SLURM_LOCALID": "5",
        "SLURM_NODEID": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NODELIST": "node[7-8]",
    }.items():
        monkeypatch.setenv(key, value)
    # Building this Trainer sets Lightning's process-wide rank_zero_only.rank to 13; restore it after the
    # test, or every later test in this process would act as rank 13 (no logs, no rank-zero warnings).
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    trainer = instantiate(cfg.trainer)
    assert type(trainer.strategy.cluster_environment).__name__ == "SLURMEnvironment"
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 8, 16)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (13, 5, 1)


def stub(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_sbatch_script_the_plugin_submits(tmp_path, monkeypatch):
    """The plugin's own launch() with stub `sbatch`/`srun` on PATH: the submitted script is the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir / "srun", "exit 0\n")
    stub(bin_dir / "sbatch", "echo 'Submitted batch job 4242'\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit.SlurmJob, "results", lambda self: [None])  # nothing runs: no cluster

    cfg = compose_slurm(tmp_path, "trainer=fsdp", "slurm.nodes=4", "slurm.partition=gpu", "slurm.account=lvm")
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert launcher.launch([["optimizer.lr=1e-4"], ["optimizer.lr=3e-4"]], initial_job_idx=0) == [None, None]

    scripts = list((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh"))
    assert len(scripts) == 1  # one job array for the sweep
    script = scripts[0].read_text()
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lvm",
        "#SBATCH --time=4320",
        "#SBATCH --array=0-1%2",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, (line, script)
    assert "srun --unbuffered" in script and "-m submitit.core._submit" in script


def test_submitit_local_runs_a_two_point_sweep(demo_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run_train_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        *FAST,
        f"paths.data_dir={demo_data_dir}",
        "trainer.max_steps=4",
        "logger=csv",
        "optimizer.lr=1e-3,3e-3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=300,
    )
    for job, lr in (("0", "0.001"), ("1", "0.003")):
        assert (sweep / job / "checkpoints" / "last.ckpt").exists()
        assert f"optimizer.lr={lr}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    assert len(list((sweep / ".submitit").rglob("*_result.pkl"))) == 2  # both submitit jobs finished

"""Read a Hydra multirun sweep of `python -m lvm.train -m ...` into pandas tables.

A sweep folder holds one folder per job, named by its job number:

    <sweep_dir>/<job>/.hydra/config.yaml       the composed config of that job
    <sweep_dir>/<job>/.hydra/overrides.yaml    its command-line overrides
    <sweep_dir>/<job>/tensorboard/events.*     TensorBoardLogger(name="tensorboard", version="")
    <sweep_dir>/<job>/checkpoints/last.ckpt

`runs_table` gives one row per job (size, budget, final losses); `loss_curves` gives every logged point
of one loss as (job, step, tokens, flops, loss), for loss-vs-compute plots.

TensorBoard stores scalars as float32, so logged token and FLOP counts are exact only below 2**24
(tokens) and to about 7 significant digits (FLOPs): plenty for plots and fits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tbparse import SummaryReader

from lvm.model.config import ModelConfig

TENSORBOARD_DIR = "tensorboard"
EVENTS_GLOB = "events.out.tfevents.*"
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
TOKENS = "train/tokens_seen"
FLOPS = "train/flops_spent"

TABLE_COLUMNS = [
    "job",
    "model",
    "params",
    "max_steps",
    "optimizer",
    "lr",
    "batch_size",
    "seq_len",
    "steps",
    "complete",
    "tokens",
    "flops",
    "train_loss",
    "val_loss",
    "overrides",
    "path",
]
CURVE_COLUMNS = ["job", "model", "params", "step", "tokens", "flops", "loss"]


class BrokenJobWarning(UserWarning):
    """A job folder of a sweep that could not be read (still running, crashed, or logged without TensorBoard)."""


class IncompleteJobWarning(UserWarning):
    """A job whose last logged step is short of trainer.max_steps (still running, or stopped early)."""


class BrokenJobError(RuntimeError):
    """A job folder that could not be read, raised instead of skipped when strict=True."""


@dataclass(frozen=True)
class Job:
    """One job of a sweep: its folder, its composed config, and its scalars in long form (step, tag, value)."""

    number: int
    path: Path
    config: DictConfig
    overrides: list[str]
    scalars: pd.DataFrame

    def series(self, tag: str) -> pd.Series:
        """Values of one scalar tag indexed by step (empty when the tag was never logged)."""
        rows = self.scalars[self.scalars["tag"] == tag]
        return pd.Series(
            rows["value"].to_numpy(dtype=np.float64), index=rows["step"].to_numpy(dtype=np.int64), name=tag
        )


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The job folders of a sweep in job order; raises naming the folder when there are none."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    # Hydra names job folders by job number; multirun.yaml and launcher folders (.submitit) sit beside them.
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not jobs:
        raise FileNotFoundError(
            f"sweep folder {sweep_dir} holds no job folders (<job number>/.hydra/config.yaml); "
            "is it the folder given as hydra.sweep.dir?"
        )
    return sorted(jobs, key=lambda p: int(p.name))


def newest_sweep(multiruns_dir: str | Path) -> Path:
    """The most recent sweep under a `logs/<task>/multiruns/` folder (Hydra names them by start time)."""
    multiruns_dir = Path(multiruns_dir)
    sweeps = sorted(p for p in multiruns_dir.glob("*") if p.is_dir()) if multiruns_dir.is_dir() else []
    if not sweeps:
        raise FileNotFoundError(
            f"no sweep under {multiruns_dir}; run e.g. "
            "`python -m lvm.train -m experiment=demo +sweep=scaling_tiny paths.data_dir=...`"
        )
    # The %Y-%m-%d_%H-%M-%S names sort in time order, unlike mtimes which copying can change.
    return sweeps[-1]


def read_scalars(events_dir: str | Path) -> pd.DataFrame:
    """Every scalar under a TensorBoard folder as (step, tag, value), one row per tag and step.

    A resumed run appends a second event file that logs some steps again: the value written last wins."""
    events_dir = Path(events_dir)
    if not any(events_dir.rglob(EVENTS_GLOB)):
        raise FileNotFoundError(f"no TensorBoard event files ({EVENTS_GLOB}) under {events_dir}")
    scalars = SummaryReader(str(events_dir), extra_columns={"wall_time"}).scalars
    if scalars.empty:
        return pd.DataFrame(
            {"step": pd.Series(dtype=np.int64), "tag": pd.Series(dtype=str), "value": pd.Series(dtype=np.float64)}
        )
    scalars = scalars.sort_values("wall_time", kind="stable").drop_duplicates(["tag", "step"], keep="last")
    return scalars.sort_values(["tag", "step"], kind="stable")[["step", "tag", "value"]].reset_index(drop=True)


def model_config(cfg: DictConfig) -> ModelConfig:
    """The job's ModelConfig, built like lvm.train builds it (cfg.model without Hydra's _target_)."""
    fields = OmegaConf.to_container(cfg.model, resolve=True)
    fields.pop("_target_", None)
    return ModelConfig(**fields)


def load_job(job_dir: str | Path) -> Job:
    """Config, overrides and scalars of one job folder; raises BrokenJobError naming what is missing."""
    job_dir = Path(job_dir)
    config_path = job_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise BrokenJobError(f"job {job_dir}: no composed config at {config_path}")
    config = OmegaConf.load(config_path)
    try:  # checked here so that a config the table cannot size is a named broken job, not a bare TypeError
        model_config(config)
    except Exception as error:
        raise BrokenJobError(f"job {job_dir}: its model config does not make a ModelConfig: {error}") from None
    overrides_path = job_dir / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_path)) if overrides_path.is_file() else []
    try:
        scalars = read_scalars(job_dir / TENSORBOARD_DIR)
    except FileNotFoundError as error:
        raise BrokenJobError(
            f"job {job_dir}: {error} (still running, crashed before logging, or logger=csv?)"
        ) from None
    if not (scalars["tag"] == TRAIN_LOSS).any():
        raise BrokenJobError(f"job {job_dir}: its TensorBoard events hold no {TRAIN_LOSS}")
    return Job(int(job_dir.name), job_dir, config, [str(o) for o in overrides], scalars)


def load_jobs(sweep_dir: str | Path, strict: bool = False) -> list[Job]:
    """Every readable job of a sweep. A broken job is skipped with a BrokenJobWarning naming it (or raised
    when strict); the skipped ones are counted in one more warning, and a sweep with no readable job raises."""
    jobs, broken = [], []
    for job_dir in job_dirs(sweep_dir):
        try:
            jobs.append(load_job(job_dir))
        except BrokenJobError as error:
            if strict:
                raise
            broken.append(job_dir)
            warnings.warn(f"skipping {error}", BrokenJobWarning, stacklevel=2)
    if broken:
        warnings.warn(
            f"skipped {len(broken)} of {len(broken) + len(jobs)} job(s) of {sweep_dir}: "
            f"{', '.join(p.name for p in broken)}",
            BrokenJobWarning,
            stacklevel=2,
        )
    if not jobs:
        raise BrokenJobError(f"no readable job in sweep {sweep_dir}")
    return jobs


def _tokens_per_step_and_flops_per_token(job: Job) -> tuple[float, float]:
    """(tokens per optimizer step, FLOPs per token), read back from the logged counters.

    lvm.training.lit_module logs tokens_seen = (step + 1) · tokens per update and flops = tokens · FLOPs per token, so
    these two numbers place a loss logged at any step (train or val, whatever log_every_n_steps) on the
    tokens and compute axes without assuming the two were logged at the same steps."""
    tokens, flops = job.series(TOKENS), job.series(FLOPS)
    both = tokens.index.intersection(flops.index)  # the two are logged together, in the same training_step
    if both.empty:
        raise BrokenJobError(f"job {job.path}: no {TOKENS} and {FLOPS} logged at a common step")
    step = both[-1]
    return float(tokens.loc[step]) / (step + 1), float(flops.loc[step]) / float(tokens.loc[step])


def job_row(job: Job, last_k: int = 5) -> dict:
    """One row of `runs_table`: the job's size, budget and final losses."""
    if last_k < 1:
        raise ValueError(f"last_k must be at least 1, got {last_k}")
    cfg = job.config
    model = model_config(cfg)
    train_loss, val_loss = job.series(TRAIN_LOSS), job.series(VAL_LOSS)
    tokens, flops = job.series(TOKENS), job.series(FLOPS)
    steps = int(train_loss.index[-1]) + 1  # logged steps count from 0
    # Lightning logs every n-th step, so a finished run's last logged step may be up to n - 1 short.
    complete = steps > int(cfg.trainer.max_steps) - int(OmegaConf.select(cfg, "trainer.log_every_n_steps", default=1))
    if not complete:
        warnings.warn(
            f"job {job.path} logged {steps} of trainer.max_steps={cfg.trainer.max_steps} steps "
            "(still running, or stopped early): its final losses are not at its budget",
            IncompleteJobWarning,
            stacklevel=3,
        )
    return {
        "job": job.number,
        "model": model.name,
        "params": model.num_parameters,
        "max_steps": int(cfg.trainer.max_steps),
        # the factory's name (adamw, muon): sweeps over optimizer=... tell their runs apart by it
        "optimizer": str(cfg.optimizer._target_).rsplit(".", 1)[-1].removeprefix("build_"),
        "lr": float(cfg.optimizer.lr),
        "batch_size": int(cfg.data.batch_size),
        "seq_len": int(cfg.data.seq_len),
        "steps": steps,
        "complete": complete,
        "tokens": float(tokens.iloc[-1]) if len(tokens) else np.nan,
        "flops": float(flops.iloc[-1]) if len(flops) else np.nan,
        # The mean of the last few points: one logged batch loss is noisy at small batch sizes.
        "train_loss": float(train_loss.iloc[-last_k:].mean()),
        "val_loss": float(val_loss.iloc[-1]) if len(val_loss) else np.nan,
        "overrides": " ".join(job.overrides),
        "path": str(job.path),
    }


def runs_table(sweep_dir: str | Path, last_k: int = 5, strict: bool = False) -> pd.DataFrame:
    """One row per job of a sweep: job, model, params, max_steps, optimizer (the factory's name: adamw, muon),
    lr, batch_size, seq_len, steps (last logged step + 1), complete (whether that reaches max_steps;
    IncompleteJobWarning otherwise), tokens (final train/tokens_seen), flops (final train/flops_spent),
    train_loss (mean of the last `last_k` logged train/loss points), val_loss (last val/loss; NaN when the
    job never validated), overrides, path."""
    rows = [job_row(job, last_k) for job in load_jobs(sweep_dir, strict=strict)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def warmup_steps(job: Job) -> int:
    """The job's learning-rate warm-up length (scheduler.warmup_steps; 0 when it has none)."""
    return int(OmegaConf.select(job.config, "scheduler.warmup_steps", default=0) or 0)


def job_curve(job: Job, tag: str = TRAIN_LOSS, skip_warmup: bool = False) -> pd.DataFrame:
    """Every logged point of one loss tag of a job, on the step, tokens and FLOPs axes; without the
    points inside the learning-rate warm-up when skip_warmup (where loss does not yet follow compute)."""
    model = model_config(job.config)
    loss = job.series(tag)
    if skip_warmup:
        loss = loss[loss.index >= warmup_steps(job)]
    tokens_per_step, flops_per_token = _tokens_per_step_and_flops_per_token(job)
    tokens = (loss.index.to_numpy(dtype=np.float64) + 1) * tokens_per_step
    return pd.DataFrame(
        {
            "job": job.number,
            "model": model.name,
            "params": model.num_parameters,
            "step": loss.index.to_numpy(),
            "tokens": tokens,
            "flops": tokens * flops_per_token,
            "loss": loss.to_numpy(),
        },
        columns=CURVE_COLUMNS,
    )


def loss_curves(
    sweep_dir: str | Path, tag: str = TRAIN_LOSS, skip_warmup: bool = False, strict: bool = False
) -> pd.DataFrame:
    """Long format for loss-vs-compute plots: one row per (job, logged step) with job, model, params, step,
    tokens, flops and loss (the `tag` scalar); see job_curve for skip_warmup."""
    curves = [job_curve(job, tag, skip_warmup) for job in load_jobs(sweep_dir, strict=strict)]
    return pd.concat(curves, ignore_index=True)


def loss_column(table: pd.DataFrame) -> str:
    """val_loss when every run validated (held-out loss is what scaling laws are about), else train_loss."""
    return "val_loss" if table["val_loss"].notna().all() else "train_loss"


def params_points(table: pd.DataFrame, loss: str | None = None, max_steps: int | None = None) -> pd.DataFrame:
    """The points of an L(N) fit: one complete run per model size, all at the same step budget (`max_steps`,
    default the largest in the table) so that only N varies, and the best of a size's runs at that budget
    (the best learning rate of an lr sweep). `loss` is a column of `runs_table` (default: `loss_column`).
    Returns the chosen rows, sorted by params, with the fitted loss in a `loss` column."""
    max_steps = int(table["max_steps"].max()) if max_steps is None else max_steps
    runs = table[(table["max_steps"] == max_steps) & table["complete"]]
    if runs.empty:
        raise ValueError(
            f"no complete run with max_steps={max_steps}; the table has {sorted(table['max_steps'].unique())}"
        )
    loss = loss or loss_column(runs)
    runs = runs[runs[loss].notna()]
    best = runs.loc[runs.groupby("params")[loss].idxmin()].sort_values("params")
    return best.assign(loss=best[loss]).reset_index(drop=True)

"""lvm.analysis.runs on a real sweep of `python -m lvm.train -m`: the table's numbers against the model
config and against the raw TensorBoard events (read with TensorBoard's own EventAccumulator, not tbparse)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lvm.analysis.runs import (
    BrokenJobError,
    BrokenJobWarning,
    IncompleteJobWarning,
    job_dirs,
    loss_curves,
    newest_sweep,
    params_points,
    runs_table,
)
from lvm.model.config import ModelConfig
from tests.conftest import BATCH_SIZE, MAX_STEPS, SEQ_LEN, WIDTHS

TOKENS = MAX_STEPS * BATCH_SIZE * SEQ_LEN
DEMO_VOCAB = 356  # experiment=demo's vocabulary: the demo tokenizer's 256 codes + the 100 reserved ids


def events(job_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar straight from the job's event file."""
    accumulator = EventAccumulator(str(job_dir / "tensorboard"))
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def width_config(width: int) -> ModelConfig:
    return ModelConfig(
        name=f"tiny_w{width}",
        hidden_size=width,
        intermediate_size=2 * width,
        num_layers=2,
        num_heads=4,
        vocab_size=DEMO_VOCAB,
        image_positions=64,  # experiment=demo's table: a row per place in a 64-token image
    )


@pytest.mark.slow
def test_table_has_one_row_per_job_with_the_real_numbers(tiny_sweep):
    table = runs_table(tiny_sweep, last_k=1)
    assert table["job"].tolist() == [0, 1, 2]
    assert table["model"].tolist() == [f"tiny_{name}" for name in WIDTHS]
    expected = [width_config(w) for w in WIDTHS.values()]
    assert table["params"].tolist() == [c.num_parameters for c in expected]
    assert table["params"].is_monotonic_increasing
    assert (table["max_steps"] == MAX_STEPS).all() and (table["steps"] == MAX_STEPS).all() and table["complete"].all()
    assert (table["optimizer"] == "muon").all()  # experiment=demo's
    assert (table["lr"] == 2e-3).all() and (table["batch_size"] == BATCH_SIZE).all()
    assert (table["tokens"] == TOKENS).all()  # steps × batch_size × seq_len
    # FLOPs as lvm.training.lit_module counts them; TensorBoard stores float32, hence the tolerance.
    assert table["flops"].tolist() == pytest.approx([TOKENS * c.flops_per_token(SEQ_LEN) for c in expected], rel=1e-6)
    for row in table.itertuples():
        job = tiny_sweep / str(row.job)
        assert row.path == str(job) and f"+width={row.model.removeprefix('tiny_')}" in row.overrides
        train = events(job, "train/loss")
        assert [step for step, _ in train] == list(range(MAX_STEPS))  # log_every_n_steps=1
        assert row.train_loss == pytest.approx(train[-1][1], rel=1e-7)
        ((val_step, val_loss),) = events(job, "val/loss")  # one validation, at the last step
        assert val_step == MAX_STEPS - 1 and row.val_loss == pytest.approx(val_loss, rel=1e-7)
        assert 0 < row.val_loss < np.log(DEMO_VOCAB) + 1  # near-uniform start over the vocabulary, then lower


@pytest.mark.slow
def test_train_loss_is_the_mean_of_the_last_k_points(tiny_sweep):
    table = runs_table(tiny_sweep, last_k=3)
    for row in table.itertuples():
        last = [value for _, value in events(tiny_sweep / str(row.job), "train/loss")][-3:]
        assert row.train_loss == pytest.approx(np.mean(last), rel=1e-6)
    with pytest.raises(ValueError, match="last_k"):
        runs_table(tiny_sweep, last_k=0)


@pytest.mark.slow
def test_loss_curves_place_every_logged_point_on_tokens_and_compute(tiny_sweep):
    curves = loss_curves(tiny_sweep)
    assert len(curves) == len(WIDTHS) * MAX_STEPS
    assert list(curves.columns) == ["job", "model", "params", "step", "tokens", "flops", "loss"]
    table = runs_table(tiny_sweep)
    for job, run in curves.groupby("job"):
        assert run["tokens"].tolist() == [(s + 1) * BATCH_SIZE * SEQ_LEN for s in run["step"]]
        logged_flops = [value for _, value in events(tiny_sweep / str(job), "train/flops_spent")]
        assert run["flops"].tolist() == pytest.approx(logged_flops, rel=1e-6)
        assert run["loss"].tolist() == pytest.approx([v for _, v in events(tiny_sweep / str(job), "train/loss")])
        assert run["flops"].iloc[-1] == pytest.approx(table.set_index("job").loc[job, "flops"], rel=1e-6)
    val = loss_curves(tiny_sweep, tag="val/loss")
    assert val["step"].tolist() == [MAX_STEPS - 1] * len(WIDTHS) and (val["tokens"] == TOKENS).all()
    assert loss_curves(tiny_sweep, skip_warmup=True)["step"].min() == 2  # scheduler.warmup_steps=2


@pytest.mark.slow
def test_params_points_pick_one_run_per_size_at_the_largest_budget(tiny_sweep):
    table = runs_table(tiny_sweep)
    points = params_points(table)
    assert points["params"].tolist() == sorted(table["params"])
    assert points["loss"].tolist() == table.sort_values("params")["val_loss"].tolist()  # every run validated
    assert (
        params_points(table, loss="train_loss")["loss"].tolist() == table.sort_values("params")["train_loss"].tolist()
    )
    with pytest.raises(ValueError, match="max_steps=7"):
        params_points(table, max_steps=7)


@pytest.mark.slow
def test_broken_jobs_are_named_counted_and_skipped_or_raised(tiny_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep, ignore=shutil.ignore_patterns("*.ckpt"))
    shutil.rmtree(sweep / "1" / "tensorboard")  # e.g. a job that crashed before its first log
    with pytest.warns(BrokenJobWarning) as caught:
        table = runs_table(sweep)
    messages = [str(w.message) for w in caught]
    assert any(str(sweep / "1") in m and "no TensorBoard event files" in m for m in messages)
    assert any("skipped 1 of 3 job(s)" in m for m in messages)
    assert table["job"].tolist() == [0, 2]
    with pytest.raises(BrokenJobError, match=str(sweep / "1")):
        runs_table(sweep, strict=True)
    (sweep / "2" / ".hydra" / "config.yaml").unlink()
    with pytest.warns(BrokenJobWarning) as caught:
        assert loss_curves(sweep)["job"].unique().tolist() == [0]
    messages = [str(w.message) for w in caught]
    assert any(str(sweep / "2") in m and "no composed config" in m for m in messages)
    assert any("skipped 2 of 3 job(s)" in m and m.endswith(": 1, 2") for m in messages)


@pytest.mark.slow
def test_a_job_short_of_its_budget_is_flagged_and_left_out_of_the_fit(tiny_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep, ignore=shutil.ignore_patterns("*.ckpt"))
    config = sweep / "0" / ".hydra" / "config.yaml"  # as if job 0 were still running towards 60 steps
    config.write_text(config.read_text().replace(f"max_steps: {MAX_STEPS}\n", "max_steps: 60\n", 1))
    with pytest.warns(IncompleteJobWarning, match=f"job {sweep / '0'} logged {MAX_STEPS} of trainer.max_steps=60"):
        table = runs_table(sweep)
    assert table["complete"].tolist() == [False, True, True]
    with pytest.raises(ValueError, match="no complete run with max_steps=60"):
        params_points(table)
    assert params_points(table, max_steps=MAX_STEPS)["job"].tolist() == [1, 2]


def test_sweep_without_jobs_raises_naming_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'} does not exist"):
        runs_table(tmp_path / "missing")
    (tmp_path / "multirun.yaml").write_text("{}\n")
    (tmp_path / "notes").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} holds no job folders"):
        job_dirs(tmp_path)


def test_a_sweep_of_only_broken_jobs_raises(tmp_path):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("model: {hidden_size: 64, heads: 4}\n")
    with (
        pytest.warns(BrokenJobWarning) as caught,
        pytest.raises(BrokenJobError, match=f"no readable job in sweep {tmp_path}"),
    ):
        runs_table(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any(f"job {tmp_path / '0'}: its model config does not make a ModelConfig" in m for m in messages)
    assert any("skipped 1 of 1 job(s)" in m for m in messages)


def test_newest_sweep_is_the_latest_timestamped_folder(tmp_path):
    for name in ("2026-01-02_10-00-00", "2026-01-10_09-00-00", "2026-01-09_23-59-59"):
        (tmp_path / name).mkdir()
    assert newest_sweep(tmp_path) == tmp_path / "2026-01-10_09-00-00"
    with pytest.raises(FileNotFoundError, match="no sweep under"):
        newest_sweep(tmp_path / "none")

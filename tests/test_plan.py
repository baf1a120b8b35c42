"""`python -m lvm.plan` on a real 3-run sweep made with `+sweep=scaling_tiny`, on the published surface, and
its one-line errors."""

import json
import math
import subprocess
import sys

import pytest

from lvm.analysis.compute_plan import model_zoo
from lvm.analysis.loss_surface import HOFFMANN_2022, fit_loss_surface, surface_points
from lvm.analysis.runs import loss_curves
from tests.cli import run_module_cli
from tests.conftest import ROOT


@pytest.mark.slow
def test_plan_on_a_sweep_prints_the_fit_and_the_plan_and_writes_it(tiny_sweep, tmp_path):
    out = tmp_path / "plan.json"
    result = run_module_cli(
        "lvm.plan",
        f"sweep_dir={tiny_sweep}",
        "compute=[1e13,1e20]",
        "n_bootstrap=40",
        f"out_file={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    text = result.stdout
    plan = json.loads(out.read_text())
    # The same fit as the Python API on the same points.
    points = surface_points(loss_curves(tiny_sweep, skip_warmup=True), max_points_per_run=20)
    fit = fit_loss_surface(points, n_bootstrap=40)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert plan["surface"][name] == pytest.approx(getattr(fit.surface, name), rel=1e-6)
    assert f"Joint fit (approach 3): {fit.surface.formula()}" in text
    assert f"{fit.n_points} points of 3 runs" in text
    assert "a from IsoFLOP minima (approach 2)" in text  # a number, or "not available" and why
    assert "C = 1e+13 FLOPs" in text and "C = 1e+20 FLOPs" in text and "nearest zoo size" in text

    small, large = plan["plans"]
    assert small["compute"] == 1e13 and large["compute"] == 1e20
    assert small["params"]["value"] == pytest.approx(float(fit.surface.optimal_allocation(1e13)[0]), rel=1e-6)
    assert {small["model"], large["model"]} <= {m.name for m in model_zoo()}
    # 1e20 FLOPs is orders of magnitude past a 6-step CPU sweep: the plan says so.
    assert large["extrapolation"] > 1e6
    assert any(w.startswith("extrapolated") for w in large["warnings"]) and "warning" in text
    assert f"plan: {out}" in text


def test_plan_with_the_published_surface_and_gpu_hours(tmp_path):
    out = tmp_path / "plan.json"
    result = run_module_cli(
        "lvm.plan", "surface=hoffmann2022", "gpu_hours=10000", "gpu=h100", "mfu=0.4", f"out_file={out}",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    (plan,) = json.loads(out.read_text())["plans"]
    compute = 10000 * 3600 * 989.4e12 * 0.4
    assert plan["compute"] == pytest.approx(compute)
    assert plan["params"]["value"] == pytest.approx(float(HOFFMANN_2022.optimal_allocation(compute)[0]))
    # N_opt = 1.345·(2.37e21)^0.452 = 6.0e9: the 7B (6.54e9) is the nearest size, at the 7B recipe's batch.
    assert plan["model"] == "vqlm_7b" and plan["tokens_per_step"] == 4 * 32 * 4096
    assert plan["train_steps"] == math.ceil(plan["model_tokens"] / plan["tokens_per_step"])
    assert "Published fit" in result.stdout and "vqlm_7b" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["surface=hoffmann2022"], "error: give the budget as compute=<FLOPs>"),
        (["compute=1e20"], "error: give sweep_dir=<multirun folder> (fit it) or surface=hoffmann2022"),
        (["sweep_dir=/no/such/sweep", "compute=1e20"], "error: sweep folder /no/such/sweep does not exist"),
        (["surface=hoffmann2022", "gpu_hours=10", "gpu=h9000"], "error: gpu='h9000' is not a chip with a known peak"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "lvm.plan", *args, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr

"""The planner: zoo sizes and recipes read from conf/, GPU hours → FLOPs with the peak table, and plans whose
numbers follow from the surface (closed form, nearest size, steps, intervals, extrapolation warnings)."""

import math

import pytest

from lvm.analysis.compute_plan import (
    ZooModel,
    compute_from_gpu_hours,
    model_zoo,
    nearest_model,
    plan_compute,
    recipe_tokens_per_step,
)
from lvm.analysis.loss_surface import HOFFMANN_2022, fit_loss_surface
from lvm.model.config import ModelConfig
from tests.analysis.test_loss_surface import synthetic_runs


def test_zoo_is_every_model_config_with_its_recipe():
    zoo = model_zoo()
    names = [m.name for m in zoo]
    assert names[0] == "vqlm_debug" and names[-1] == "vqlm_30b" and "vqlm_7b" in names and len(names) == 10
    assert [m.params for m in zoo] == sorted(m.params for m in zoo)
    seven = next(m for m in zoo if m.name == "vqlm_7b")
    assert seven.recipe == "lvm_7b"
    assert (
        seven.params
        == ModelConfig(
            name="vqlm_7b", hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, vocab_size=8292
        ).num_parameters
    )
    assert next(m for m in zoo if m.name == "vqlm_debug").recipe is None


def test_recipe_tokens_per_step_is_the_originals_global_batch():
    # The original's 7B run: 4 micro-batches of 32 sequences of 4,096 tokens per update.
    assert recipe_tokens_per_step("lvm_7b") == 4 * 32 * 4096


def test_gpu_hours_use_the_dense_bf16_peak():
    assert compute_from_gpu_hours(1000, "h100", 0.4) == pytest.approx(1000 * 3600 * 989.4e12 * 0.4)
    with pytest.raises(ValueError, match="'h9000' is not a chip with a known peak"):
        compute_from_gpu_hours(10, "h9000", 0.4)
    with pytest.raises(ValueError, match="mfu"):
        compute_from_gpu_hours(10, "h100", 1.5)


def test_nearest_size_is_nearest_on_a_log_scale():
    zoo = [ZooModel("small", 10**8, None), ZooModel("large", 10**10, None)]
    assert nearest_model(zoo, 0.9e9).name == "small" and nearest_model(zoo, 1.1e9).name == "large"


def test_plan_from_the_published_surface():
    compute = 1e21
    plan = plan_compute(HOFFMANN_2022, compute, tokens_per_step=2**19)
    n_opt, d_opt = HOFFMANN_2022.optimal_allocation(compute)
    assert plan.params.value == pytest.approx(float(n_opt)) and plan.tokens.value == pytest.approx(float(d_opt))
    assert plan.params_numeric == pytest.approx(float(n_opt), rel=1e-4)
    assert plan.loss.value == pytest.approx(float(HOFFMANN_2022.loss(n_opt, d_opt)))
    assert plan.model == "vqlm_1b"  # N_opt = 1.82e9: 1.15e9 is nearer than 3.27e9 on a log scale
    assert plan.model_tokens == pytest.approx(compute / (6 * plan.model_params))
    assert plan.train_steps == math.ceil(plan.model_tokens / 2**19)
    assert plan.model_loss.value >= plan.loss.value  # the optimum is the minimum at this compute
    assert math.isnan(plan.params.low) and math.isnan(plan.extrapolation) and plan.warnings == ()


def test_plan_from_a_fit_carries_intervals_and_warns_when_extrapolating():
    fit = fit_loss_surface(synthetic_runs(HOFFMANN_2022, noise=1e-2), n_bootstrap=60)
    inside = plan_compute(fit, 1e18)  # inside the fitted 6·N·D range (6e15 … 1.8e20)
    assert inside.extrapolation == 1.0 and not any("extrapolated" in w for w in inside.warnings)
    for estimate in (inside.params, inside.tokens, inside.loss, inside.model_loss):
        assert estimate.low <= estimate.value <= estimate.high
    recipe = next(m.recipe for m in model_zoo() if m.name == inside.model)
    assert inside.tokens_per_step == recipe_tokens_per_step(recipe)
    far = plan_compute(fit, 1e24)
    assert far.extrapolation == pytest.approx(1e24 / fit.compute_range[1])
    assert any(w.startswith(f"extrapolated {far.extrapolation:.2g}× beyond") for w in far.warnings)
    # Further out, the replicates disagree more.
    assert far.params.high / far.params.low > inside.params.high / inside.params.low
    tiny = plan_compute(fit, 1e12)
    assert any("outside the zoo" in w for w in tiny.warnings)
    with pytest.raises(ValueError, match="compute must be a positive number"):
        plan_compute(fit, 0)

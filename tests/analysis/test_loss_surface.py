"""The joint L(N, D) fit (approach 3) against surfaces whose parameters are known, and the closed-form
compute-optimal allocation against a numeric search and against Hoffmann et al. 2022's published exponents."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad

from lvm.analysis.loss_surface import (
    HOFFMANN_2022,
    PARAMETERS,
    LossSurface,
    _objective,
    fit_loss_surface,
    surface_points,
)

SIZES = (1e7, 3e7, 1e8, 3e8, 1e9)


def synthetic_runs(surface: LossSurface, noise: float, seed: int = 0, points_per_run: int = 20) -> pd.DataFrame:
    """One run per size, its loss logged at tokens 1e8 … 3e10, times exp(N(0, noise)) (noise in log L)."""
    rng = np.random.default_rng(seed)
    rows = [
        (job, n, d, float(surface.loss(n, d)) * float(np.exp(rng.normal(0.0, noise))))
        for job, n in enumerate(SIZES)
        for d in np.geomspace(1e8, 3e10, points_per_run)
    ]
    return pd.DataFrame(rows, columns=["job", "params", "tokens", "loss"])


def test_low_noise_recovers_every_parameter_within_5_percent():
    fit = fit_loss_surface(synthetic_runs(HOFFMANN_2022, noise=1e-3), n_bootstrap=30)
    for name in PARAMETERS:
        assert fit.estimates[name].value == pytest.approx(getattr(HOFFMANN_2022, name), rel=0.05), name
    assert fit.rmse_log < 2e-3  # the noise level: the surface is fitted, not the noise
    assert (fit.n_points, fit.n_runs) == (100, 5)
    assert fit.params_range == (1e7, 1e9)
    assert fit.compute_range == pytest.approx((6 * 1e7 * 1e8, 6 * 1e9 * 3e10))


def test_noisy_runs_keep_the_true_parameters_inside_the_bootstrap_intervals():
    fit = fit_loss_surface(synthetic_runs(HOFFMANN_2022, noise=1e-2, seed=0), n_bootstrap=200)
    for name in PARAMETERS:
        estimate = fit.estimates[name]
        assert estimate.contains(getattr(HOFFMANN_2022, name)), (name, str(estimate))
        assert estimate.low < estimate.value < estimate.high and estimate.stderr > 0
    # 1 % noise per point is far more than 0.1 %: the intervals must say so.
    tight = fit_loss_surface(synthetic_runs(HOFFMANN_2022, noise=1e-3, seed=0), n_bootstrap=50)
    assert fit.estimates["alpha"].stderr > 3 * tight.estimates["alpha"].stderr


def test_a_different_surface_is_recovered_too():
    surface = LossSurface(E=3.2, A=60.0, B=900.0, alpha=0.25, beta=0.4)
    fit = fit_loss_surface(synthetic_runs(surface, noise=5e-4, seed=3), n_bootstrap=0)
    for name in PARAMETERS:
        assert getattr(fit.surface, name) == pytest.approx(getattr(surface, name), rel=0.05), name


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    log_n, log_d = np.log(rng.uniform(1e6, 1e9, 40)), np.log(rng.uniform(1e7, 1e10, 40))
    log_l = np.log(rng.uniform(2.0, 4.0, 40))
    for theta in (np.array([6.0, 6.0, 0.5, 0.34, 0.28]), np.array([10.0, 3.0, 1.0, 0.5, 0.2])):
        # δ = 1 keeps every residual in the quadratic part, where the Huber loss is smooth.
        value = lambda t: _objective(t, log_n, log_d, log_l, 1.0)[0]  # noqa: E731
        gradient = lambda t: _objective(t, log_n, log_d, log_l, 1.0)[1]  # noqa: E731
        assert check_grad(value, gradient, theta) < 1e-5 * max(1.0, np.abs(gradient(theta)).max())


def test_points_are_thinned_evenly_in_log_tokens():
    steps = np.arange(1, 1001)
    curves = pd.DataFrame({"job": 0, "params": 1e6, "tokens": steps * 1000.0, "loss": 5.0 / np.log(steps + 1)})
    points = surface_points(curves, max_points_per_run=10)
    assert list(points.columns) == ["job", "params", "tokens", "loss"]
    assert len(points) == 10 and points["tokens"].iloc[0] == 1000.0 and points["tokens"].iloc[-1] == 1e6
    # Even in log D: each of the 3 decades holds about a third of the points, not 90 % in the last one.
    decades = np.floor(np.log10(points["tokens"] / 1000.0).clip(upper=2.999))
    assert np.bincount(decades.astype(int)).tolist() in ([3, 3, 4], [4, 3, 3], [3, 4, 3])


def test_fewer_than_three_sizes_is_refused_by_name():
    runs = synthetic_runs(HOFFMANN_2022, noise=1e-3)
    with pytest.raises(ValueError, match="at least 3 model sizes, got 2"):
        fit_loss_surface(runs[runs["params"] <= 3e7], n_bootstrap=0)


@pytest.mark.parametrize("surface", [HOFFMANN_2022, LossSurface(E=2.0, A=50.0, B=2000.0, alpha=0.2, beta=0.45)])
@pytest.mark.parametrize("compute", [1e15, 1e19, 1e21, 1e24])
def test_numeric_optimum_equals_the_closed_form(surface, compute):
    n_closed, d_closed = surface.optimal_allocation(compute)
    n_numeric, d_numeric = surface.numeric_optimum(compute)
    assert n_numeric == pytest.approx(float(n_closed), rel=1e-4)
    assert d_numeric == pytest.approx(float(d_closed), rel=1e-4)
    assert 6 * float(n_closed) * float(d_closed) == pytest.approx(compute, rel=1e-12)
    # The closed form in the notation: N_opt = G·(C/6)^(β/(α+β)), G = (αA/(βB))^(1/(α+β)).
    a, b = surface.alpha, surface.beta
    g = (a * surface.A / (b * surface.B)) ** (1 / (a + b))
    assert float(n_closed) == pytest.approx(g * (compute / 6) ** (b / (a + b)), rel=1e-12)


def test_hoffmann_2022_allocation_grows_with_compute_at_the_papers_exponents():
    compute = np.geomspace(1e18, 1e25, 15)
    n_opt, d_opt = HOFFMANN_2022.optimal_allocation(compute)
    assert (np.diff(n_opt) > 0).all() and (np.diff(d_opt) > 0).all()
    slope_n = np.polyfit(np.log(compute), np.log(n_opt), 1)[0]
    slope_d = np.polyfit(np.log(compute), np.log(d_opt), 1)[0]
    assert slope_n == pytest.approx(0.28 / 0.62) and slope_d == pytest.approx(0.34 / 0.62)
    # The paper's Table 2 reports a = 0.46, b = 0.54 for approach 3; its rounded parameters give 0.452 / 0.548.
    assert abs(slope_n - 0.46) < 0.01 and abs(slope_d - 0.54) < 0.01
    # Tokens per parameter grow with compute (α > β): more data than parameters at larger budgets.
    assert (np.diff(d_opt / n_opt) > 0).all()

"""lvm.analysis.power_law: known power laws recovered with honest intervals, too few points refused,
the frontier is the lower envelope of hand-made curves."""

import warnings

import numpy as np
import pandas as pd
import pytest

from lvm.analysis.power_law import compute_frontier, fit_frontier, fit_power_law

A, ALPHA, C = 400.0, 0.3, 1.8
N = np.geomspace(1e6, 1e9, 12)


def law(n: np.ndarray, a: float = A, alpha: float = ALPHA, c: float = C) -> np.ndarray:
    return a * n**-alpha + c


def test_recovers_exact_power_law_with_tight_errors():
    fit = fit_power_law(N, law(N))
    assert (fit.a.value, fit.alpha.value, fit.c.value) == pytest.approx((A, ALPHA, C), rel=1e-6)
    for estimate in (fit.a, fit.alpha, fit.c):
        assert estimate.stderr < 1e-6 * abs(estimate.value)
    assert fit.rmse < 1e-9 and fit.dof == len(N) - 3 and fit.offset
    assert fit.predict(1e12) == pytest.approx(law(1e12), rel=1e-6)
    assert fit.predict(N) == pytest.approx(law(N), rel=1e-6)


@pytest.mark.parametrize("interval", ["covariance", "bootstrap"])
def test_noisy_points_give_intervals_that_hold_the_true_values(interval):
    rng = np.random.default_rng(1)
    n = np.repeat(np.geomspace(1e6, 1e9, 10), 2)  # two runs (seeds) per size
    loss = law(n) + rng.normal(0.0, 0.01, n.size)
    fit = fit_power_law(n, loss, interval=interval, n_bootstrap=400, seed=0)
    assert fit.interval == interval
    for estimate, truth in ((fit.a, A), (fit.alpha, ALPHA), (fit.c, C)):
        assert estimate.contains(truth), (estimate, truth)
        assert estimate.low < estimate.value < estimate.high
    # Informative, not just wide: α to better than ±0.1 from 20 points at 1% noise.
    assert fit.alpha.high - fit.alpha.low < 0.2
    assert fit.a.low > 0  # a's interval is mapped from log a, so it stays positive


def test_bootstrap_repeats_with_the_same_seed():
    rng = np.random.default_rng(2)
    loss = law(N) + rng.normal(0.0, 0.01, N.size)
    first, second = (fit_power_law(N, loss, interval="bootstrap", n_bootstrap=100, seed=7) for _ in range(2))
    assert first.alpha == second.alpha and first.c == second.c


def test_pure_power_law_without_offset():
    rng = np.random.default_rng(3)
    loss = 50.0 * N**-0.1 * np.exp(rng.normal(0.0, 0.005, N.size))  # multiplicative noise, no floor
    fit = fit_power_law(N, loss, offset=False)
    assert fit.c is None and not fit.offset
    assert fit.alpha.contains(0.1) and fit.a.contains(50.0)
    assert fit.predict(N) == pytest.approx(50.0 * N**-0.1, rel=0.02)
    assert "+" not in fit.formula("N")


@pytest.mark.parametrize("x", [[1e6, 1e6, 2e6, 2e6], [1e6], []])
def test_too_few_distinct_sizes_is_refused(x):
    with pytest.raises(ValueError, match=r"at least 3 distinct x values .* got \d"):
        fit_power_law(x, np.ones(len(x)) * 3.0)


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        fit_power_law(N, law(N)[:-1])
    with pytest.raises(ValueError, match="finite"):
        fit_power_law(N, np.where(N > 1e8, np.nan, law(N)))
    with pytest.raises(ValueError, match="offset"):
        fit_power_law(N, law(N), offset="yes")
    with pytest.raises(ValueError, match="interval"):
        fit_power_law(N, law(N), interval="jackknife")


def test_three_sizes_leave_no_uncertainty_for_three_parameters():
    n = np.array([1e6, 1e7, 1e8])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # offset=True is asked for explicitly: no fallback, no warning
        fit = fit_power_law(n, law(n), offset=True)
    assert fit.dof == 0 and np.isnan(fit.alpha.stderr) and "no residual degree of freedom" in fit.note
    assert fit.alpha.value == pytest.approx(ALPHA, rel=1e-4)


def test_auto_falls_back_to_a_pure_power_law_and_says_why():
    n = np.array([1e6, 1e7, 1e8])
    with pytest.warns(UserWarning, match="c is not identifiable .*no degree of freedom"):
        fit = fit_power_law(n, 20.0 * n**-0.05, offset="auto")
    assert fit.c is None and fit.dof == 1 and "pure power law" in fit.note
    assert fit.alpha.value == pytest.approx(0.05, rel=1e-6)
    # With enough points the offset is kept.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_power_law(N, law(N), offset="auto").c.value == pytest.approx(C, rel=1e-6)


def curves_of(runs: dict[int, tuple[list[float], list[float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"job": job, "flops": x, "loss": y} for job, (xs, ys) in runs.items() for x, y in zip(xs, ys)])


# Two hand-made runs that cross between compute 10 and 100: the small one is better early, the big one later.
CROSSING = curves_of({0: ([1, 10, 100], [4.0, 3.0, 2.5]), 1: ([10, 100, 1000], [3.5, 2.4, 2.0])})


def test_frontier_is_the_lower_envelope_at_logged_compute():
    frontier = compute_frontier(CROSSING)
    assert frontier["flops"].tolist() == [1, 10, 100, 1000]
    assert frontier["loss"].tolist() == [4.0, 3.0, 2.4, 2.0]
    assert frontier["job"].tolist() == [0, 0, 1, 1]


def test_frontier_interpolates_each_run_in_log_compute_on_a_grid():
    frontier = compute_frontier(CROSSING, n_grid=7)  # 1, 10^0.5, 10, 10^1.5, 100, 10^2.5, 1000
    assert frontier["flops"].to_numpy() == pytest.approx(np.geomspace(1, 1000, 7))
    # At 10^1.5 run 0 is halfway between 3.0 and 2.5, run 1 halfway between 3.5 and 2.4.
    assert frontier["loss"].tolist() == pytest.approx([4.0, 3.5, 3.0, 2.75, 2.4, 2.2, 2.0])
    assert frontier["job"].tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_frontier_drops_compute_that_no_run_covers_and_smooths_when_asked():
    gap = curves_of({0: ([1, 10], [3.0, 2.0]), 1: ([100, 1000], [1.5, 1.0])})
    frontier = compute_frontier(gap, n_grid=7)
    assert frontier["flops"].to_numpy() == pytest.approx([1, 10**0.5, 10, 100, 10**2.5, 1000])
    noisy = curves_of({0: ([1, 2, 4, 8], [3.0, 1.0, 3.0, 3.0])})  # one lucky batch at compute 2
    assert compute_frontier(noisy, window=2)["loss"].tolist() == [3.0, 2.0, 2.0, 3.0]


def test_frontier_fit_recovers_the_compute_exponent_above_min_x():
    compute = np.geomspace(1e10, 1e14, 30)
    frontier = pd.DataFrame({"flops": compute, "loss": np.where(compute < 1e11, 9.0, 30.0 * compute**-0.05)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether c is kept at ~0 or dropped, β is the same
        fit = fit_frontier(frontier, min_x=1e11)
    assert fit.n_points == int((compute >= 1e11).sum())
    assert fit.alpha.value == pytest.approx(0.05, rel=1e-3)

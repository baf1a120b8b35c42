"""Scaling-law fits: L(x) = a·x^(-α) + c by nonlinear least squares, with uncertainties, and the
compute-optimal frontier of several loss-vs-compute curves.

The fit works in a centred parametrisation, L = exp(u)·(x/x_ref)^(-α) + c with x_ref the geometric mean
of x, because a raw `a` spans tens of orders of magnitude (x ~ 1e6 parameters or 1e15 FLOPs) and is
strongly correlated with α; u and α are nearly uncorrelated and of order one. The reported a is
exp(u)·x_ref^α, its error propagated from (u, α) through log a = u + α·log x_ref (so its interval is
positive and asymmetric).

When c is not identifiable (the points still lie on a straight line in log-log space, too few points to
leave a residual degree of freedom, or the fit puts c below 0 or above the smallest loss, which a
cross-entropy floor cannot be), `offset="auto"` falls back to a pure power law L = a·x^(-α), fitted as
a straight line in log-log space (multiplicative errors), and says so in a warning and in `PowerLawFit.note`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats

MIN_DISTINCT_X = 3
OffsetMode = bool | Literal["auto"]


@dataclass(frozen=True)
class Estimate:
    """A fitted value with its standard error and 95% interval (NaN where it cannot be estimated)."""

    value: float
    stderr: float
    low: float
    high: float

    @property
    def ci95(self) -> tuple[float, float]:
        return self.low, self.high

    def contains(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def __post_init__(self) -> None:
        for name in ("value", "stderr", "low", "high"):  # plain floats, not numpy scalars, in reprs and tables
            object.__setattr__(self, name, float(getattr(self, name)))

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.stderr:.2g} (95% CI {self.low:.4g} to {self.high:.4g})"


@dataclass(frozen=True)
class PowerLawFit:
    """L(x) = a·x^(-α) + c (c is None for a pure power law), fitted to `n_points` points."""

    a: Estimate
    alpha: Estimate
    c: Estimate | None
    n_points: int
    dof: int  # residual degrees of freedom: points - fitted parameters
    rmse: float  # root-mean-square residual of the loss, in loss units
    interval: str  # how stderr and the 95% interval were obtained: "covariance" or "bootstrap"
    x_range: tuple[float, float] = (np.nan, np.nan)  # smallest and largest fitted x: where the fit holds
    note: str = ""  # why the offset was dropped, or why there is no uncertainty

    @property
    def offset(self) -> bool:
        return self.c is not None

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """The fitted loss at x (array in, array out)."""
        x = np.asarray(x, dtype=np.float64)
        return self.a.value * x ** (-self.alpha.value) + (self.c.value if self.c is not None else 0.0)

    def formula(self, variable: str = "N", exponent: str = "α") -> str:
        """e.g. 'L(N) = 12.3·N^-0.0812 + 1.7' for legends."""
        text = f"L({variable}) = {self.a.value:.3g}·{variable}^-{self.alpha.value:.3g}"
        return text + (f" + {self.c.value:.3g}" if self.c is not None else "")

    def describe(self, exponent: str = "α") -> str:
        """The exponent with its uncertainty, one line: 'α = 0.081 ± 0.012 (95% CI 0.055 to 0.11)'."""
        return f"{exponent} = {self.alpha}"


def _as_points(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite (drop runs without a loss first)")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a power law needs positive x and positive losses")
    distinct = np.unique(x).size
    if distinct < MIN_DISTINCT_X:
        raise ValueError(
            f"a power-law fit needs at least {MIN_DISTINCT_X} distinct x values (model sizes or "
            f"compute levels), got {distinct}; add runs of other sizes"
        )
    return x, y


@dataclass(frozen=True)
class _RawFit:
    """Parameters (u, α[, c]) of the centred form, their covariance, and the residual statistics."""

    params: np.ndarray
    cov: np.ndarray
    dof: int
    rmse: float


def _centred(x: np.ndarray, x_ref: float) -> np.ndarray:
    return np.log(x / x_ref)


def _offset_model(t: np.ndarray, u: float, alpha: float, c: float) -> np.ndarray:
    return np.exp(u - alpha * t) + c


def _line_model(t: np.ndarray, u: float, alpha: float) -> np.ndarray:
    return u - alpha * t


def _initial_offset_guess(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Best (u, α, c) over a grid of c below the smallest loss, each with a straight log-log line: a
    starting point in the right basin, where a fixed guess can send Levenberg-Marquardt off to c → -∞."""
    best, best_sse = None, np.inf
    for c in np.linspace(0.0, 0.99 * y.min(), 50):
        slope, intercept = np.polyfit(t, np.log(y - c), 1)
        sse = float(np.sum((_offset_model(t, intercept, -slope, c) - y) ** 2))
        if sse < best_sse:
            best, best_sse = np.array([intercept, -slope, c]), sse
    return best


def _fit_raw(x: np.ndarray, y: np.ndarray, x_ref: float, offset: bool, p0: np.ndarray | None = None) -> _RawFit:
    t = _centred(x, x_ref)
    with warnings.catch_warnings():
        # With no residual degree of freedom curve_fit warns and returns an infinite covariance: handled below.
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        if offset:
            p0 = _initial_offset_guess(t, y) if p0 is None else p0
            params, cov = optimize.curve_fit(_offset_model, t, y, p0=p0, maxfev=20000)
            residuals = _offset_model(t, *params) - y
        else:
            # Straight line in log-log space: linear, so the solution and its covariance are exact.
            params, cov = optimize.curve_fit(_line_model, t, np.log(y), p0=p0 if p0 is not None else [0.0, 0.0])
            residuals = np.exp(_line_model(t, *params)) - y
    return _RawFit(params, cov, dof=x.size - params.size, rmse=float(np.sqrt(np.mean(residuals**2))))


def _offset_problem(raw: _RawFit, y: np.ndarray) -> str:
    """Why the offset form cannot be trusted for these points ('' when it can)."""
    c = raw.params[2]
    if raw.dof < 1:
        return f"{raw.dof + 3} points leave no degree of freedom to estimate 3 parameters"
    if not np.isfinite(np.diag(raw.cov)).all():
        return "the covariance of (a, α, c) could not be estimated"
    if not 0.0 <= c < y.min():
        return f"the fitted floor c = {c:.4g} is outside [0, smallest loss {y.min():.4g})"
    return ""


def _derived(params: np.ndarray, x_ref: float) -> np.ndarray:
    """(log a, α[, c]) from the centred (u, α[, c])."""
    out = params.copy()
    out[0] = params[0] + params[1] * np.log(x_ref)
    return out


def _covariance_estimates(raw: _RawFit, x_ref: float) -> list[Estimate]:
    """Wald estimates from the covariance, with Student-t 95% intervals on `dof` degrees of freedom."""
    values = _derived(raw.params, x_ref)
    # Jacobian of (log a, α, c) with respect to (u, α, c): log a = u + α·log x_ref.
    jacobian = np.eye(raw.params.size)
    jacobian[0, 1] = np.log(x_ref)
    variance = np.diag(jacobian @ raw.cov @ jacobian.T) if raw.dof > 0 else np.full(values.size, np.nan)
    stderr = np.sqrt(np.where(np.isfinite(variance) & (variance >= 0), variance, np.nan))
    half = stats.t.ppf(0.975, raw.dof) * stderr if raw.dof > 0 else np.full(values.size, np.nan)
    log_a = Estimate(values[0], stderr[0], values[0] - half[0], values[0] + half[0])
    return [_exp_estimate(log_a)] + [Estimate(v, s, v - h, v + h) for v, s, h in zip(values[1:], stderr[1:], half[1:])]


def _exp_estimate(log_estimate: Estimate) -> Estimate:
    """a from log a: the delta-method stderr a·se(log a), the interval mapped through exp."""
    a = float(np.exp(log_estimate.value))
    return Estimate(a, a * log_estimate.stderr, float(np.exp(log_estimate.low)), float(np.exp(log_estimate.high)))


def _bootstrap_estimates(
    x: np.ndarray, y: np.ndarray, x_ref: float, raw: _RawFit, offset: bool, n_bootstrap: int, seed: int
) -> tuple[list[Estimate], str]:
    """Percentile intervals and standard deviations over refits to points resampled with replacement.
    Resamples with fewer than MIN_DISTINCT_X distinct x, or whose refit fails, are left out and counted."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_bootstrap):
        index = rng.integers(0, x.size, x.size)
        if np.unique(x[index]).size < MIN_DISTINCT_X:
            continue
        try:
            refit = _fit_raw(x[index], y[index], x_ref, offset, p0=raw.params)
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        samples.append(_derived(refit.params, x_ref))
    if len(samples) < max(20, n_bootstrap // 2):
        raise RuntimeError(
            f"only {len(samples)} of {n_bootstrap} bootstrap resamples could be fitted; "
            "use interval='covariance' or add points"
        )
    samples = np.array(samples)
    values = _derived(raw.params, x_ref)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    stderr = samples.std(axis=0, ddof=1)
    log_a = Estimate(values[0], stderr[0], low[0], high[0])
    estimates = [_exp_estimate(log_a)] + [Estimate(*v) for v in zip(values[1:], stderr[1:], low[1:], high[1:])]
    left_out = n_bootstrap - len(samples)
    return estimates, (f"{left_out} of {n_bootstrap} bootstrap resamples left out" if left_out else "")


def fit_power_law(
    x: np.ndarray,
    y: np.ndarray,
    *,
    offset: OffsetMode = True,
    interval: Literal["covariance", "bootstrap"] = "covariance",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> PowerLawFit:
    """Fit L(x) = a·x^(-α) + c (offset=True), L = a·x^(-α) (offset=False), or the first when c is
    identifiable and else the second (offset="auto", with a warning saying why).

    interval="covariance": standard errors from the least-squares covariance (scaled by the residual
    variance) and Student-t 95% intervals; NaN when no degree of freedom is left.
    interval="bootstrap": the standard deviation and 2.5/97.5 percentiles of refits to `n_bootstrap`
    resamples of the points (with replacement, `seed` fixed so the numbers repeat).
    Needs at least 3 distinct x (ValueError otherwise); raises RuntimeError when the fit does not converge."""
    if offset not in (True, False, "auto"):
        raise ValueError(f"offset must be True, False or 'auto', got {offset!r}")
    x, y = _as_points(x, y)
    x_ref = float(np.exp(np.mean(np.log(x))))
    note = ""
    use_offset = offset is True or offset == "auto"
    raw = None
    if use_offset:
        try:
            raw = _fit_raw(x, y, x_ref, offset=True)
            problem = _offset_problem(raw, y) if offset == "auto" else ""
        except RuntimeError as error:
            if offset is True:
                raise RuntimeError(f"the fit of a·x^-α + c to {x.size} points did not converge: {error}") from None
            problem = "the fit with an offset did not converge"
        if problem:
            note = f"pure power law a·x^-α: c is not identifiable ({problem})"
            warnings.warn(note, stacklevel=2)
            use_offset, raw = False, None
    if raw is None:
        raw = _fit_raw(x, y, x_ref, offset=False)
    if interval == "covariance":
        estimates = _covariance_estimates(raw, x_ref)
        if raw.dof < 1:
            note = "; ".join(filter(None, [note, "no residual degree of freedom: no uncertainty"]))
    elif interval == "bootstrap":
        estimates, left_out = _bootstrap_estimates(x, y, x_ref, raw, use_offset, n_bootstrap, seed)
        note = "; ".join(filter(None, [note, left_out]))
    else:
        raise ValueError(f"interval must be 'covariance' or 'bootstrap', got {interval!r}")
    return PowerLawFit(
        a=estimates[0],
        alpha=estimates[1],
        c=estimates[2] if use_offset else None,
        n_points=int(x.size),
        dof=raw.dof,
        rmse=raw.rmse,
        interval=interval,
        x_range=(float(x.min()), float(x.max())),
        note=note,
    )


def compute_frontier(
    curves: pd.DataFrame, x: str = "flops", y: str = "loss", n_grid: int | None = None, window: int = 1
) -> pd.DataFrame:
    """The lower envelope of several loss curves: at each compute level, the lowest loss any run reached
    there, and which run (the compute-optimal one).

    `curves` is long format with columns job, `x`, `y` (lvm.analysis.runs.loss_curves). Each run's curve is
    interpolated linearly in log x, only inside its own x range, at the compute levels: every x logged by
    any run (n_grid=None), or n_grid levels spaced evenly in log x (even weight per decade for a fit).
    `window` > 1 first smooths each run with a trailing rolling mean, so single noisy batch losses do
    not make the envelope. Returns columns `x`, `y` and job, sorted by x."""
    if curves.empty:
        raise ValueError("no loss curves to take a frontier of")
    runs = []
    for job, run in curves.groupby("job", sort=True):
        run = run.sort_values(x)
        values = run[y].rolling(window, min_periods=1).mean() if window > 1 else run[y]
        runs.append((job, np.log(run[x].to_numpy(dtype=np.float64)), values.to_numpy(dtype=np.float64)))
    all_x = curves[x].to_numpy(dtype=np.float64)
    grid = np.unique(all_x) if n_grid is None else np.geomspace(all_x.min(), all_x.max(), n_grid)
    log_grid = np.log(grid)
    losses = np.full((len(runs), grid.size), np.inf)
    for i, (_, log_x, values) in enumerate(runs):
        inside = (log_grid >= log_x[0]) & (log_grid <= log_x[-1])
        losses[i, inside] = np.interp(log_grid[inside], log_x, values)
    best = losses.argmin(axis=0)
    envelope = losses[best, np.arange(grid.size)]
    covered = np.isfinite(envelope)  # a level between two runs' ranges that no run covers is dropped
    jobs = np.array([job for job, _, _ in runs])
    return pd.DataFrame({x: grid[covered], y: envelope[covered], "job": jobs[best[covered]]})


def fit_frontier(
    frontier: pd.DataFrame,
    x: str = "flops",
    y: str = "loss",
    min_x: float | None = None,
    offset: OffsetMode = "auto",
    **kwargs,
) -> PowerLawFit:
    """L(C) fitted to the frontier points at x >= min_x (drop the warm-up, where loss is not yet a power
    law of compute). offset="auto" by default: over a short compute range c is rarely identifiable.
    The frontier points are interpolated and correlated, so the uncertainty is optimistic; read it as a
    fit diagnostic rather than a confidence statement."""
    points = frontier if min_x is None else frontier[frontier[x] >= min_x]
    return fit_power_law(points[x].to_numpy(), points[y].to_numpy(), offset=offset, **kwargs)

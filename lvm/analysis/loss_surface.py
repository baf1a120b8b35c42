"""The joint scaling law L(N, D) = E + A/N^α + B/D^β of Hoffmann et al. 2022 ("Training Compute-Optimal
Large Language Models", §3.3, approach 3), fitted to every logged point of a sweep, with bootstrap intervals.

N is the model's parameter count, D the tokens it has trained on, and compute is C = 6·N·D FLOPs (the
paper's approximation, which the closed-form allocation below assumes; the FLOPs a run logs also count
attention, so they run a little higher).

The fit minimises Σ Huber_δ(LSE(a − α·log N, b − β·log D, e) − log L) over (a, b, e, α, β), with A = eᵃ,
B = eᵇ, E = eᵉ and δ = 1e-3, by L-BFGS from the paper's grid of initialisations (α, β ∈ {0, 0.5, …, 2},
e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}). The objective is evaluated at all 4,500 grid points in one
vectorised pass and L-BFGS runs from the `n_starts` best of them, which finds the same optimum for a
fraction of the cost of 4,500 runs.

Uncertainty comes from refits to sweeps resampled by run: whole runs are drawn with replacement, because
the points of one run share its noise, its data order and its learning-rate schedule; resampling single
points would treat them as independent and understate the intervals.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize
from threadpoolctl import threadpool_limits

from lvm.analysis.power_law import Estimate

HUBER_DELTA = 1e-3
MIN_SIZES = 3  # E, A and α need at least three model sizes: two leave E + A/N^α underdetermined
PARAMETERS = ("E", "A", "B", "alpha", "beta")
# The initialisation grid of Hoffmann et al. 2022, appendix D.2, over θ = (a, b, e, α, β).
INITIAL_GRID = np.array(
    list(
        itertools.product(
            np.arange(0.0, 26.0, 5.0),  # a = log A
            np.arange(0.0, 26.0, 5.0),  # b = log B
            np.arange(-1.0, 1.01, 0.5),  # e = log E
            np.arange(0.0, 2.01, 0.5),  # α
            np.arange(0.0, 2.01, 0.5),  # β
        )
    )
)
# α and β stay in [0, 10]: a negative exponent would mean loss grows with size or data.
BOUNDS = [(None, None), (None, None), (None, None), (0.0, 10.0), (0.0, 10.0)]


@dataclass(frozen=True)
class LossSurface:
    """L(N, D) = E + A/N^α + B/D^β: the loss of an N-parameter model after D training tokens."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
        """The predicted loss (broadcasts over arrays of N and D)."""
        n, d = np.asarray(params, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
        return self.E + self.A * n ** (-self.alpha) + self.B * d ** (-self.beta)

    @property
    def params_exponent(self) -> float:
        """a in N_opt ∝ C^a: β/(α+β)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def tokens_exponent(self) -> float:
        """b in D_opt ∝ C^b: α/(α+β)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """(αA / (βB))^(1/(α+β)), the constant of the closed-form allocation."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal_allocation(self, compute: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """The closed-form minimum of L under C = 6·N·D (Hoffmann et al. 2022, §3.3):
        N_opt = G·(C/6)^(β/(α+β)),  D_opt = G⁻¹·(C/6)^(α/(α+β))."""
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(
                f"no compute-optimal allocation with α = {self.alpha:.3g}, β = {self.beta:.3g} (both must be > 0)"
            )
        c6 = np.asarray(compute, dtype=np.float64) / 6.0
        return self.G * c6**self.params_exponent, c6**self.tokens_exponent / self.G

    def numeric_optimum(self, compute: float) -> tuple[float, float]:
        """(N, D) minimising L(N, C/(6N)) found numerically (bounded Brent search over log N), as a check
        on the closed form and for surfaces the closed form does not cover."""
        n_guess = float(self.optimal_allocation(compute)[0]) if self.alpha > 0 and self.beta > 0 else 1e9

        def loss_at(log_n: float) -> float:
            n = np.exp(log_n)
            return float(self.loss(n, compute / (6.0 * n)))

        centre = np.log(n_guess)
        result = optimize.minimize_scalar(
            loss_at, bounds=(centre - 25.0, centre + 25.0), method="bounded", options={"xatol": 1e-10}
        )
        n = float(np.exp(result.x))
        return n, compute / (6.0 * n)

    def formula(self) -> str:
        """e.g. 'L(N, D) = 1.69 + 406/N^0.34 + 411/D^0.28' (E below 1e-6 is written 0)."""
        e = f"{self.E:.3g}" if self.E >= 1e-6 else "0"
        return f"L(N, D) = {e} + {self.A:.3g}/N^{self.alpha:.3g} + {self.B:.3g}/D^{self.beta:.3g}"


# Hoffmann et al. 2022, eq. (10): their approach-3 fit on Chinchilla's runs (MassiveText, nats per token).
HOFFMANN_2022 = LossSurface(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


@dataclass(frozen=True)
class LossSurfaceFit:
    """A fitted LossSurface with bootstrap estimates of its five parameters and the ranges it was fitted on."""

    surface: LossSurface
    estimates: dict[str, Estimate]  # E, A, B, alpha, beta: value of the full fit, bootstrap stderr and 95 % interval
    replicates: tuple[LossSurface, ...]  # the refits to resampled sweeps
    n_points: int
    n_runs: int
    rmse_log: float  # root-mean-square residual of log L at the optimum
    params_range: tuple[float, float]
    tokens_range: tuple[float, float]
    compute_range: tuple[float, float]  # of 6·N·D over the fitted points
    note: str = field(default="")

    def estimate(self, of_surface: Callable[[LossSurface], float]) -> Estimate:
        """Any quantity of a surface (e.g. `lambda s: s.loss(1e9, 2e10)`) with its bootstrap uncertainty:
        the value on the full fit, the standard deviation and central 95 % interval over the replicates."""
        return bootstrap_estimate(of_surface(self.surface), [of_surface(s) for s in self.replicates])


def bootstrap_estimate(value: float, samples: Sequence[float]) -> Estimate:
    """`value` with the standard deviation and 2.5/97.5 percentiles of `samples` (NaN without samples)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size < 2:
        return Estimate(value, np.nan, np.nan, np.nan)
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return Estimate(value, np.nanstd(samples, ddof=1), low, high)


def surface_points(curves: pd.DataFrame, max_points_per_run: int = 20) -> pd.DataFrame:
    """The points of a joint fit from `lvm.analysis.loss_curves(sweep, skip_warmup=True)`: per run, at most
    `max_points_per_run` of its logged points, picked evenly in log tokens so every decade of D weighs the
    same (logging every step would otherwise let the long tail of a run dominate). Returns job, params,
    tokens, loss."""
    if max_points_per_run < 2:
        raise ValueError(f"max_points_per_run must be at least 2, got {max_points_per_run}")
    missing = {"job", "params", "tokens", "loss"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves lack the columns {sorted(missing)} (expected lvm.analysis.loss_curves output)")
    picked = []
    for _, run in curves.groupby("job", sort=True):
        run = run[(run["tokens"] > 0) & np.isfinite(run["loss"])].sort_values("tokens")
        if run.empty:
            continue
        log_tokens = np.log(run["tokens"].to_numpy(dtype=np.float64))
        targets = np.linspace(log_tokens[0], log_tokens[-1], max_points_per_run)
        index = np.unique(np.abs(log_tokens[None, :] - targets[:, None]).argmin(axis=1))
        picked.append(run.iloc[index])
    if not picked:
        raise ValueError("no logged point with tokens > 0 and a finite loss")
    return pd.concat(picked, ignore_index=True)[["job", "params", "tokens", "loss"]]


def _huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, elementwise."""
    small = np.abs(residual) <= delta
    value = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta))
    return value, np.clip(residual, -delta, delta)


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float):
    """Mean Huber loss of the log-space residuals, and its gradient in θ = (a, b, e, α, β)."""
    a, b, e, alpha, beta = theta
    t_n, t_d = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(t_n, t_d), e)
    w_n, w_d, w_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
    total = w_n + w_d + w_e
    residual = top + np.log(total) - log_l  # log(A/N^α + B/D^β + E) − log L
    value, slope = _huber(residual, delta)
    scale = slope / (total * log_n.size)  # ∂Huber/∂residual · softmax normaliser
    g_n, g_d = w_n * scale, w_d * scale
    gradient = np.array([g_n.sum(), g_d.sum(), (w_e * scale).sum(), -(g_n * log_n).sum(), -(g_d * log_d).sum()])
    # Divided by δ: the same minimiser, with values and gradients of order one for L-BFGS's tolerances.
    return value.mean() / delta, gradient / delta


def _grid_objective(log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float) -> np.ndarray:
    """The objective at every row of INITIAL_GRID (G, 5) in one pass: (G,)."""
    a, b, e, alpha, beta = (INITIAL_GRID[:, i : i + 1] for i in range(5))
    residual = np.log(np.exp(a - alpha * log_n) + np.exp(b - beta * log_d) + np.exp(e)) - log_l  # (G, points)
    return _huber(residual, delta)[0].mean(axis=1)


@threadpool_limits.wrap(limits=1, user_api="blas")
def _minimise(starts: np.ndarray, log_n, log_d, log_l, delta: float) -> tuple[np.ndarray, float]:
    """The best L-BFGS result over several starting points: (θ, objective). On one BLAS thread: the
    5-parameter problem is far too small to share, and with a busy second core OpenBLAS's threads made
    each L-BFGS-B iteration 30× slower (measured on 2 cores)."""
    best_theta, best_value = None, np.inf
    for start in starts:
        result = optimize.minimize(
            _objective,
            start,
            args=(log_n, log_d, log_l, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=BOUNDS,
            options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9},
        )
        if np.isfinite(result.fun) and result.fun < best_value:
            best_theta, best_value = result.x, float(result.fun)
    if best_theta is None:
        raise RuntimeError("L-BFGS found no finite optimum from any starting point")
    return best_theta, best_value


def _best_starts(log_n, log_d, log_l, delta: float, n_starts: int) -> np.ndarray:
    grid_values = _grid_objective(log_n, log_d, log_l, delta)
    return INITIAL_GRID[np.argsort(grid_values, kind="stable")[:n_starts]]


def _surface(theta: np.ndarray) -> LossSurface:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return LossSurface(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta)


def _check_points(points: pd.DataFrame) -> pd.DataFrame:
    missing = {"job", "params", "tokens", "loss"} - set(points.columns)
    if missing:
        raise ValueError(f"points lack the columns {sorted(missing)} (expected job, params, tokens, loss)")
    values = points[["params", "tokens", "loss"]].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError("params, tokens and loss must be finite and positive")
    sizes = points["params"].nunique()
    if sizes < MIN_SIZES:
        raise ValueError(
            f"a joint L(N, D) fit needs runs of at least {MIN_SIZES} model sizes, got {sizes}; add runs of other sizes"
        )
    if len(points) < 2 * len(PARAMETERS):
        raise ValueError(f"a joint L(N, D) fit of 5 parameters needs at least 10 points, got {len(points)}")
    return points


def fit_loss_surface(
    points: pd.DataFrame,
    *,
    delta: float = HUBER_DELTA,
    n_starts: int = 4,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> LossSurfaceFit:
    """Fit L(N, D) = E + A/N^α + B/D^β to `points` (columns job, params, tokens, loss; `surface_points`
    makes them from a sweep) as the module docstring describes, with `n_bootstrap` refits to the runs
    resampled with replacement (`seed` fixed so the intervals repeat; 0 skips the bootstrap). Resamples
    with fewer than 3 distinct sizes cannot pin E, A and α down: they are drawn again, and counted in
    `note`. Needs runs of ≥ 3 sizes and ≥ 10 points (ValueError otherwise)."""
    points = _check_points(points)
    params, tokens, loss = (points[c].to_numpy(dtype=np.float64) for c in ("params", "tokens", "loss"))
    log_n, log_d, log_l = np.log(params), np.log(tokens), np.log(loss)
    theta, _ = _minimise(_best_starts(log_n, log_d, log_l, delta, n_starts), log_n, log_d, log_l, delta)
    surface = _surface(theta)
    rmse_log = float(np.sqrt(np.mean((np.log(surface.loss(params, tokens)) - log_l) ** 2)))

    rng = np.random.default_rng(seed)
    jobs = points["job"].to_numpy()
    run_ids = np.unique(jobs)
    rows_of = {job: np.flatnonzero(jobs == job) for job in run_ids}
    size_of = {job: params[rows_of[job][0]] for job in run_ids}
    replicates, redrawn = [], 0
    while len(replicates) < n_bootstrap:
        drawn = rng.choice(run_ids, size=run_ids.size, replace=True)
        if len({size_of[job] for job in drawn}) < MIN_SIZES:
            redrawn += 1
            if redrawn > 20 * max(n_bootstrap, 1):
                raise RuntimeError(f"almost no resample of the {run_ids.size} runs holds {MIN_SIZES} sizes")
            continue
        rows = np.concatenate([rows_of[job] for job in drawn])
        # From the full fit's optimum: a resample's optimum lies near it.
        refit, _ = _minimise(theta[None, :], log_n[rows], log_d[rows], log_l[rows], delta)
        replicates.append(_surface(refit))

    notes = []
    if surface.E < 1e-3 * loss.min():
        notes.append("E → 0: these runs do not pin down the irreducible loss (the fit puts it all in the power laws)")
    if redrawn:
        notes.append(f"{redrawn} resamples with fewer than {MIN_SIZES} sizes drawn again")
    return LossSurfaceFit(
        surface=surface,
        estimates={
            name: bootstrap_estimate(getattr(surface, name), [getattr(r, name) for r in replicates])
            for name in PARAMETERS
        },
        replicates=tuple(replicates),
        n_points=len(points),
        n_runs=int(run_ids.size),
        rmse_log=rmse_log,
        params_range=(float(params.min()), float(params.max())),
        tokens_range=(float(tokens.min()), float(tokens.max())),
        compute_range=(float((6.0 * params * tokens).min()), float((6.0 * params * tokens).max())),
        note="; ".join(notes),
    )

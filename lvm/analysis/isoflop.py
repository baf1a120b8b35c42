"""IsoFLOP profiles, approach 2 of Hoffmann et al. 2022 (§3.2): at a fixed compute C = 6·N·D, final loss
against log N is a valley; a parabola through each profile gives its minimum N_opt(C), and a straight line
through log N_opt against log C gives the exponent a of N_opt ∝ C^a (and b = 1 − a for D_opt = C/(6·N_opt)).
Comparing a with β/(α+β) of the joint fit (`lvm.analysis.loss_surface`) is the paper's cross-check.

The paper trains one run per (size, budget), each with its cosine schedule set to that budget. A sweep of
runs with a few step budgets (`+sweep=scaling_tiny`) is read here along each run's curve instead: the loss
of a run part-way through its schedule is higher than that of a run scheduled to stop there, so minima
taken from curves lean towards sizes whose runs are at their end. Read `a` as a diagnostic next to the joint
fit, not as a replacement for IsoFLOP runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from lvm.analysis.power_law import Estimate

MIN_SIZES = 3  # a parabola needs three sizes on a profile


@dataclass(frozen=True)
class IsoFLOPFit:
    """The IsoFLOP minima (one row per budget) and the exponents fitted through them."""

    minima: pd.DataFrame  # compute, params_opt, tokens_opt, loss_opt, sizes
    params_exponent: Estimate  # a in N_opt ∝ C^a (t-interval of the regression slope)
    tokens_exponent: Estimate  # b = 1 − a in D_opt ∝ C^b
    note: str = ""


def isoflop_profiles(curves: pd.DataFrame, n_budgets: int = 8) -> pd.DataFrame:
    """Loss at `n_budgets` compute levels (evenly spaced in log C over the range that at least 3 model sizes
    reach) for every run whose curve covers the level, interpolated linearly in log C between its logged
    points. `curves`: job, params, tokens, loss (`lvm.analysis.loss_curves(..., skip_warmup=True)`).
    Returns compute, job, params, loss; empty when fewer than 3 sizes share any compute level."""
    columns = ["compute", "job", "params", "loss"]
    runs = []
    for job, run in curves.groupby("job", sort=True):
        run = run[run["tokens"] > 0].sort_values("tokens")
        if len(run) >= 2:
            log_c = np.log(6.0 * run["params"].to_numpy(dtype=np.float64) * run["tokens"].to_numpy(dtype=np.float64))
            runs.append((job, float(run["params"].iloc[0]), log_c, run["loss"].to_numpy(dtype=np.float64)))
    if not runs:
        return pd.DataFrame(columns=columns)
    # The compute range every level must lie in: from the MIN_SIZES-th smallest run start to the
    # MIN_SIZES-th largest run end, over the sizes (the widest range of any run of a size counts).
    starts, ends = {}, {}
    for _, params, log_c, _ in runs:
        starts[params] = min(starts.get(params, np.inf), log_c[0])
        ends[params] = max(ends.get(params, -np.inf), log_c[-1])
    if len(starts) < MIN_SIZES:
        return pd.DataFrame(columns=columns)
    low = np.sort(list(starts.values()))[MIN_SIZES - 1]
    high = np.sort(list(ends.values()))[-MIN_SIZES]
    if not low < high:
        return pd.DataFrame(columns=columns)
    rows = []
    for level in np.linspace(low, high, n_budgets):
        for job, params, log_c, loss in runs:
            if log_c[0] <= level <= log_c[-1]:
                rows.append((float(np.exp(level)), job, params, float(np.interp(level, log_c, loss))))
    return pd.DataFrame(rows, columns=columns)


def isoflop_minima(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per compute level with ≥ 3 sizes, the vertex of loss = p₀ + p₁·log N + p₂·(log N)² (the best run
    of each size), kept only when the parabola opens upwards and its vertex lies inside the sizes of that
    profile (outside, it is an extrapolation, not a measured minimum). Returns compute, params_opt,
    tokens_opt, loss_opt, sizes."""
    rows = []
    for compute, profile in profiles.groupby("compute", sort=True):
        best = profile.groupby("params", sort=True)["loss"].min()
        if best.size < MIN_SIZES:
            continue
        log_n = np.log(best.index.to_numpy(dtype=np.float64))
        p2, p1, p0 = np.polyfit(log_n, best.to_numpy(), 2)
        if p2 <= 0:
            continue
        vertex = -p1 / (2.0 * p2)
        if not log_n.min() <= vertex <= log_n.max():
            continue
        params_opt = float(np.exp(vertex))
        rows.append(
            (compute, params_opt, compute / (6.0 * params_opt), float(p0 + p1 * vertex + p2 * vertex**2), best.size)
        )
    return pd.DataFrame(rows, columns=["compute", "params_opt", "tokens_opt", "loss_opt", "sizes"])


def fit_isoflop(curves: pd.DataFrame, n_budgets: int = 8) -> IsoFLOPFit:
    """Approach 2 end to end: profiles, minima, and the slope of log N_opt on log C with its Student-t 95 %
    interval. Raises ValueError naming what is missing when fewer than 2 budgets have a measured minimum
    (too few sizes, or curves whose compute ranges do not overlap)."""
    minima = isoflop_minima(isoflop_profiles(curves, n_budgets))
    if len(minima) < 2:
        raise ValueError(
            f"IsoFLOP profiles (approach 2) need at least 2 compute levels where runs of ≥ {MIN_SIZES} sizes "
            f"overlap and loss has a minimum inside the sizes; this sweep gives {len(minima)}. Run more sizes, or "
            "longer runs, so the sizes' compute ranges overlap"
        )
    regression = stats.linregress(np.log(minima["compute"]), np.log(minima["params_opt"]))
    a = float(regression.slope)
    dof = len(minima) - 2
    if dof > 0:
        half = float(stats.t.ppf(0.975, dof)) * float(regression.stderr)
        params_exponent = Estimate(a, regression.stderr, a - half, a + half)
        tokens_exponent = Estimate(1.0 - a, regression.stderr, 1.0 - a - half, 1.0 - a + half)
        note = ""
    else:
        params_exponent = Estimate(a, np.nan, np.nan, np.nan)
        tokens_exponent = Estimate(1.0 - a, np.nan, np.nan, np.nan)
        note = "2 minima: a line through them, no uncertainty"
    return IsoFLOPFit(minima=minima, params_exponent=params_exponent, tokens_exponent=tokens_exponent, note=note)

"""Scaling-law figures: loss vs compute (one curve per run, frontier overlaid), final loss vs parameters
(with the fitted power law), and the iso-loss contours of the joint L(N, D) fit with its efficient
frontier. Built on matplotlib.figure.Figure, not pyplot, so no GUI backend or global figure state is
involved: safe under Agg, in tests and in worker processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from lvm.analysis.loss_surface import LossSurfaceFit
from lvm.analysis.power_law import PowerLawFit


def _short(fit: PowerLawFit, exponent: str) -> str:
    """'α = 0.081 ± 0.012' (no interval: legends stay one line)."""
    return f"{exponent} = {fit.alpha.value:.3g} ± {fit.alpha.stderr:.2g}"


def _size_colours(params: pd.Series) -> dict[int, tuple]:
    """One colour per model size, ordered from small (dark) to large (light)."""
    sizes = sorted(params.unique())
    cmap = colormaps["viridis"]
    return {size: cmap(i / max(len(sizes) - 1, 1) * 0.85) for i, size in enumerate(sizes)}


def plot_loss_vs_compute(
    ax: Axes,
    curves: pd.DataFrame,
    frontier: pd.DataFrame | None = None,
    frontier_fit: PowerLawFit | None = None,
    x: str = "flops",
) -> Axes:
    """Each run's loss against compute (`curves` from lvm.analysis.loss_curves), coloured by model size,
    with the compute-optimal frontier and its L(C) fit on top when given. Log-log axes."""
    colours = _size_colours(curves["params"])
    labelled = set()
    for _, run in curves.groupby("job", sort=True):
        run = run.sort_values(x)
        size = run["params"].iloc[0]
        # One legend entry per model size, not per run: the budgets of a size share a colour.
        label = None if size in labelled else f"{run['model'].iloc[0]} ({size / 1e6:.2f} M)"
        labelled.add(size)
        ax.plot(run[x], run["loss"], color=colours[size], lw=1.0, alpha=0.8, label=label)
    if frontier is not None:
        ax.plot(frontier[x], frontier["loss"], color="black", lw=2.0, ls="--", label="frontier (lower envelope)")
    if frontier_fit is not None:
        grid = np.geomspace(*frontier_fit.x_range, 200)  # drawn where it was fitted, not extrapolated
        ax.plot(
            grid,
            frontier_fit.predict(grid),
            color="tab:red",
            lw=1.5,
            ls=":",
            label=f"fit {frontier_fit.formula('C')}  ({_short(frontier_fit, 'β')})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Losses span less than a decade: plain numbers read better than 9×10^0 (minor ticks carry the labels).
    plain = FuncFormatter(lambda value, _: f"{value:.3g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("training compute C (FLOPs)" if x == "flops" else x)
    ax.set_ylabel("loss")
    ax.set_title("Loss vs compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")  # losses have fallen by the largest compute: that corner is empty
    return ax


def plot_loss_vs_params(
    ax: Axes, points: pd.DataFrame, fit: PowerLawFit | None = None, loss_label: str = "final loss"
) -> Axes:
    """Final loss against parameter count (`points` from lvm.analysis.params_points), with the fitted
    L(N) and its exponent in the legend. Log x axis."""
    ax.scatter(points["params"], points["loss"], color="tab:blue", zorder=3, label=f"runs ({loss_label})")
    for _, row in points.iterrows():
        ax.annotate(row["model"], (row["params"], row["loss"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if fit is not None:
        grid = np.geomspace(points["params"].min() / 1.3, points["params"].max() * 1.3, 200)
        ax.plot(grid, fit.predict(grid), color="tab:red", lw=1.5, label=f"fit {fit.formula('N')}\n{_short(fit, 'α')}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel(loss_label)
    ax.set_title("Final loss vs parameters")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def scaling_figure(
    curves: pd.DataFrame,
    points: pd.DataFrame,
    fit: PowerLawFit | None = None,
    frontier: pd.DataFrame | None = None,
    frontier_fit: PowerLawFit | None = None,
    loss_label: str = "final loss",
    title: str | None = None,
) -> Figure:
    """The two panels side by side: loss vs compute, and final loss vs parameters."""
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    plot_loss_vs_compute(left, curves, frontier, frontier_fit)
    plot_loss_vs_params(right, points, fit, loss_label)
    if title:
        figure.suptitle(title)
    return figure


def plot_loss_surface(ax: Axes, fit: LossSurfaceFit, points: pd.DataFrame, margin: float = 10.0) -> Axes:
    """Iso-loss contours of the fitted L(N, D) over the (N, D) plane, `margin`× beyond the fitted ranges, with
    the fitted points (`surface_points`) coloured by size, lines of equal compute C = 6·N·D, and the efficient
    frontier (N_opt(C), D_opt(C)) in red: where each compute budget is spent best."""
    surface = fit.surface
    n_grid = np.geomspace(fit.params_range[0] / margin, fit.params_range[1] * margin, 200)
    d_grid = np.geomspace(fit.tokens_range[0] / margin, fit.tokens_range[1] * margin, 200)
    n_mesh, d_mesh = np.meshgrid(n_grid, d_grid)
    loss = surface.loss(n_mesh, d_mesh)
    contours = ax.contour(n_mesh, d_mesh, loss, levels=12, cmap="viridis", linewidths=0.8)
    ax.clabel(contours, fontsize=6, fmt=lambda value: f"{value:.3g}")
    n_lo, n_hi, d_lo, d_hi = n_grid[0], n_grid[-1], d_grid[0], d_grid[-1]
    for compute in np.geomspace(6 * n_lo * d_lo, 6 * n_hi * d_hi, 9)[1:-1]:  # iso-compute diagonals
        ax.plot(n_grid, compute / (6 * n_grid), color="grey", lw=0.5, ls=":")
    colours = _size_colours(points["params"])
    for size, run in points.groupby("params", sort=True):
        ax.scatter(run["params"], run["tokens"], s=8, color=colours[size], zorder=3)
    if surface.alpha > 0 and surface.beta > 0:
        budgets = np.geomspace(6 * n_lo * d_lo, 6 * n_hi * d_hi, 200)
        n_opt, d_opt = surface.optimal_allocation(budgets)
        inside = (n_opt >= n_lo) & (n_opt <= n_hi) & (d_opt >= d_lo) & (d_opt <= d_hi)
        ax.plot(
            n_opt[inside], d_opt[inside], color="tab:red", lw=2.0,
            label=f"efficient frontier: N_opt ∝ C^{surface.params_exponent:.2f}",
        )  # fmt: skip
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n_lo, n_hi)
    ax.set_ylim(d_lo, d_hi)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("training tokens D")
    ax.set_title(f"Iso-loss contours of {surface.formula()}", fontsize=9)
    return ax


def loss_surface_figure(fit: LossSurfaceFit, points: pd.DataFrame, title: str | None = None) -> Figure:
    """The joint-fit panel on its own figure."""
    figure = Figure(figsize=(7, 5.5), layout="constrained")
    plot_loss_surface(figure.subplots(), fit, points)
    if title:
        figure.suptitle(title)
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write the figure as PNG atomically: into a temporary file in the same folder, then os.replace, so a
    reader (or a crash) never sees half a file and an existing figure is replaced in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            figure.savefig(f, format="png", dpi=dpi)
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; a figure is meant to be read
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path

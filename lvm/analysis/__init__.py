"""Scaling-law analysis of `python -m lvm.train -m` sweeps: read runs, fit power laws, plot.

from lvm.analysis import runs_table, loss_curves, params_points, fit_power_law, compute_frontier
table = runs_table("logs/scaling_tiny/multiruns/<time>")
points = params_points(table)
fit = fit_power_law(points.params, points.loss, offset="auto")
print(fit.describe())
"""

from lvm.analysis.plots import plot_loss_vs_compute, plot_loss_vs_params, save_figure, scaling_figure
from lvm.analysis.power_law import Estimate, PowerLawFit, compute_frontier, fit_frontier, fit_power_law
from lvm.analysis.runs import (
    BrokenJobError,
    BrokenJobWarning,
    IncompleteJobWarning,
    Job,
    job_dirs,
    load_jobs,
    loss_column,
    loss_curves,
    newest_sweep,
    params_points,
    read_scalars,
    runs_table,
)

__all__ = [
    "BrokenJobError",
    "BrokenJobWarning",
    "Estimate",
    "IncompleteJobWarning",
    "Job",
    "PowerLawFit",
    "compute_frontier",
    "fit_frontier",
    "fit_power_law",
    "job_dirs",
    "load_jobs",
    "loss_column",
    "loss_curves",
    "newest_sweep",
    "params_points",
    "plot_loss_vs_compute",
    "plot_loss_vs_params",
    "read_scalars",
    "runs_table",
    "save_figure",
    "scaling_figure",
]

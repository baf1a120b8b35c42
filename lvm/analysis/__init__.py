"""Scaling-law analysis of `python -m lvm.train -m` sweeps: read runs, fit power laws, plot.

from lvm.analysis import runs_table, loss_curves, params_points, fit_power_law, compute_frontier
table = runs_table("logs/scaling_tiny/multiruns/<time>")
points = params_points(table)
fit = fit_power_law(points.params, points.loss, offset="auto")
print(fit.describe())

joint = fit_loss_surface(surface_points(loss_curves("logs/scaling_tiny/multiruns/<time>", skip_warmup=True)))
print(plan_compute(joint, 1e21))
"""

from lvm.analysis.compute_plan import ComputePlan, ZooModel, compute_from_gpu_hours, model_zoo, plan_compute
from lvm.analysis.isoflop import IsoFLOPFit, fit_isoflop
from lvm.analysis.loss_surface import HOFFMANN_2022, LossSurface, LossSurfaceFit, fit_loss_surface, surface_points
from lvm.analysis.plots import (
    loss_surface_figure,
    plot_loss_surface,
    plot_loss_vs_compute,
    plot_loss_vs_params,
    save_figure,
    scaling_figure,
)
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
    "ComputePlan",
    "Estimate",
    "HOFFMANN_2022",
    "IncompleteJobWarning",
    "IsoFLOPFit",
    "Job",
    "LossSurface",
    "LossSurfaceFit",
    "PowerLawFit",
    "ZooModel",
    "compute_from_gpu_hours",
    "compute_frontier",
    "fit_frontier",
    "fit_isoflop",
    "fit_loss_surface",
    "fit_power_law",
    "job_dirs",
    "load_jobs",
    "loss_column",
    "loss_curves",
    "loss_surface_figure",
    "model_zoo",
    "newest_sweep",
    "params_points",
    "plan_compute",
    "plot_loss_surface",
    "plot_loss_vs_compute",
    "plot_loss_vs_params",
    "read_scalars",
    "runs_table",
    "save_figure",
    "scaling_figure",
    "surface_points",
]

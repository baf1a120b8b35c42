"""`python -m lvm.plan sweep_dir=<multirun folder> compute=1e21`: from a scaling sweep to a training plan.

Fits L(N, D) = E + A/N^α + B/D^β to every logged point of the sweep's runs (Hoffmann et al. 2022, approach 3,
with bootstrap intervals over runs; `lvm.analysis.loss_surface`), compares its exponent with the IsoFLOP
minima (approach 2) where the sweep allows, and prints, for each budget, the compute-optimal N and D (closed
form and numeric search), the zoo size nearest to N_opt with the tokens and optimizer steps it should get,
and the loss to expect with its 95 % interval (`lvm.analysis.compute_plan`); `plan.json` in the run folder
holds the same numbers. `surface=hoffmann2022` plans with the paper's own published fit instead of a sweep.

    python -m lvm.plan sweep_dir=logs/scaling_tiny/multiruns/<time> compute=[1e20,1e21,1e22]
    python -m lvm.plan sweep_dir=... gpu_hours=10000 gpu=h100 mfu=0.4
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from lvm.analysis.compute_plan import ComputePlan, compute_from_gpu_hours, model_zoo, plan_compute
from lvm.analysis.isoflop import IsoFLOPFit, fit_isoflop
from lvm.analysis.loss_surface import (
    HOFFMANN_2022,
    PARAMETERS,
    LossSurface,
    LossSurfaceFit,
    fit_loss_surface,
    surface_points,
)
from lvm.analysis.power_law import Estimate
from lvm.analysis.runs import loss_curves
from lvm.core.atomic_files import write_json_atomic
from lvm.core.devices import parse_dtype
from lvm.core.errors import UserError, report_user_errors

SURFACES = {"hoffmann2022": HOFFMANN_2022}


def budgets(cfg: DictConfig) -> list[float]:
    """The compute budgets in FLOPs: `compute` (a number or a list), or `gpu_hours` converted at `gpu`, `mfu`."""
    if (cfg.compute is None) == (cfg.gpu_hours is None):
        raise UserError(
            "give the budget as compute=<FLOPs> (or a list) or as gpu_hours=<hours> gpu=<chip> mfu=<0..1>, "
            "not both or neither"
        )
    if cfg.compute is not None:
        values = list(cfg.compute) if isinstance(cfg.compute, ListConfig) else [cfg.compute]
        try:
            return [float(value) for value in values]
        except (TypeError, ValueError):
            raise UserError(f"compute: expected FLOPs as numbers (e.g. 1e21), got {values}") from None
    hours = list(cfg.gpu_hours) if isinstance(cfg.gpu_hours, ListConfig) else [cfg.gpu_hours]
    return [compute_from_gpu_hours(float(h), cfg.gpu, float(cfg.mfu), parse_dtype(cfg.dtype)) for h in hours]


def fit_sweep(cfg: DictConfig) -> tuple[LossSurfaceFit, IsoFLOPFit | None, str]:
    """The joint fit of the sweep's curves, and approach 2 where the sweep allows it (else None and why)."""
    curves = loss_curves(cfg.sweep_dir, tag=cfg.loss_tag, skip_warmup=True)
    points = surface_points(curves, max_points_per_run=cfg.max_points_per_run)
    fit = fit_loss_surface(points, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    try:
        return fit, fit_isoflop(curves, n_budgets=cfg.isoflop_budgets), ""
    except ValueError as error:
        return fit, None, str(error)


def _count(n: float) -> str:
    """648 M, 6.54 B: parameter counts as people say them."""
    return f"{n / 1e9:.3g} B" if n >= 1e9 else f"{n / 1e6:.3g} M"


def _interval(estimate: Estimate, fmt: str = ".3g") -> str:
    text = f"{estimate.value:{fmt}}"
    if estimate.low == estimate.low:  # not NaN
        text += f" ({estimate.low:{fmt}} – {estimate.high:{fmt}})"
    return text


def fit_table(fit: LossSurfaceFit | LossSurface, isoflop: IsoFLOPFit | None, isoflop_note: str) -> Table:
    """The fitted parameters with their 95 % intervals, and the allocation exponents of both approaches."""
    if isinstance(fit, LossSurface):
        table = Table(title=f"Published fit: {fit.formula()}")
        table.add_column("parameter")
        table.add_column("value", justify="right")
        for name in PARAMETERS:
            table.add_row(name, f"{getattr(fit, name):.4g}")
        table.add_row("a = β/(α+β)  (N_opt ∝ C^a)", f"{fit.params_exponent:.3f}")
        return table
    table = Table(
        title=f"Joint fit (approach 3): {fit.surface.formula()}",
        caption=(
            f"{fit.n_points} points of {fit.n_runs} runs; N {fit.params_range[0]:.3g} – {fit.params_range[1]:.3g}, "
            f"D {fit.tokens_range[0]:.3g} – {fit.tokens_range[1]:.3g}, C {fit.compute_range[0]:.3g} – "
            f"{fit.compute_range[1]:.3g} FLOPs; rms log residual {fit.rmse_log:.3g}"
            + (f"; {fit.note}" if fit.note else "")
        ),
    )
    table.add_column("parameter")
    table.add_column("value (95 % interval, bootstrap over runs)", justify="right")
    for name in PARAMETERS:
        table.add_row(name, _interval(fit.estimates[name], ".4g"))
    table.add_row("a = β/(α+β)  (N_opt ∝ C^a)", _interval(fit.estimate(lambda s: s.params_exponent)))
    if isoflop is not None:
        table.add_row(
            f"a from IsoFLOP minima (approach 2, {len(isoflop.minima)} budgets)", _interval(isoflop.params_exponent)
        )
    else:
        table.add_row("a from IsoFLOP minima (approach 2)", "not available")
        table.caption += f"\napproach 2: {isoflop_note}"
    return table


def plan_table(plans: list[ComputePlan]) -> Table:
    """One column per budget."""
    table = Table(title="Compute-optimal plan (C = 6·N·D)")
    table.add_column("")
    for plan in plans:
        table.add_column(f"C = {plan.compute:.3g} FLOPs", justify="right")
    rows = [
        ("N_opt, closed form", lambda p: _interval(p.params)),
        ("N_opt, numeric", lambda p: f"{p.params_numeric:.3g}"),
        ("D_opt (tokens)", lambda p: _interval(p.tokens)),
        ("loss at the optimum", lambda p: _interval(p.loss)),
        ("nearest zoo size", lambda p: f"{p.model} ({_count(p.model_params)})"),
        ("its tokens for this budget", lambda p: f"{p.model_tokens:.3g}"),
        (
            "its train steps",
            lambda p: "—" if p.train_steps is None else f"{p.train_steps:,} × {p.tokens_per_step:,} tokens",
        ),
        ("its predicted loss", lambda p: _interval(p.model_loss)),
        ("extrapolation factor", lambda p: "—" if p.extrapolation != p.extrapolation else f"{p.extrapolation:.3g}×"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(plan) for plan in plans))
    return table


def plan(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Fit (or take the published surface), plan every budget, print the tables, write `out_file`."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: wide enough that the tables keep one line per row
            console.width = 160
    if (cfg.sweep_dir is None) == (cfg.surface is None):
        raise UserError(
            "give sweep_dir=<multirun folder> (fit it) or surface=hoffmann2022 (the published fit), not both or neither"
        )
    compute = budgets(cfg)
    if cfg.surface is not None:
        if cfg.surface not in SURFACES:
            raise UserError(f"surface: {cfg.surface!r} is not one of {sorted(SURFACES)}")
        fit, isoflop, isoflop_note = SURFACES[cfg.surface], None, ""
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unfinished runs are used as far as they got
            fit, isoflop, isoflop_note = fit_sweep(cfg)
    zoo = model_zoo()
    plans = [plan_compute(fit, c, zoo, tokens_per_step=cfg.tokens_per_step) for c in compute]
    console.print(fit_table(fit, isoflop, isoflop_note))
    console.print(plan_table(plans))
    for p in plans:
        for warning in p.warnings:
            console.print(f"[yellow]warning[/yellow] (C = {p.compute:.3g}): {warning}")
    surface = fit.surface if isinstance(fit, LossSurfaceFit) else fit
    result = {
        "sweep_dir": None if cfg.sweep_dir is None else str(Path(cfg.sweep_dir).resolve()),
        "surface": dataclasses.asdict(surface),
        "estimates": {k: dataclasses.asdict(v) for k, v in fit.estimates.items()}
        if isinstance(fit, LossSurfaceFit)
        else None,
        "isoflop_params_exponent": None if isoflop is None else dataclasses.asdict(isoflop.params_exponent),
        "plans": [dataclasses.asdict(p) for p in plans],
    }
    write_json_atomic(cfg.out_file, result)
    console.print(f"plan: {cfg.out_file}")
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="plan")
@report_user_errors
def main(cfg: DictConfig) -> None:
    plan(cfg)


if __name__ == "__main__":
    main()

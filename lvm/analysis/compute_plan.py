"""Compute-optimal plans from a fitted L(N, D): for a budget of C FLOPs (C = 6·N·D), the optimal model size
and token count, the nearest size of the model zoo (`conf/model/vqlm_*.yaml`) with the tokens and optimizer
steps it should get at its recipe's batch (`conf/experiment/lvm_<size>.yaml`), and the loss to expect, each
with the interval of the fit's bootstrap replicates. `python -m lvm.plan` prints these; the notebook calls
`plan_compute` directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lvm.analysis.loss_surface import LossSurface, LossSurfaceFit, bootstrap_estimate
from lvm.analysis.power_law import Estimate
from lvm.core.chips import chip_peak_flops
from lvm.model.config import ModelConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
EXTRAPOLATION_WARNING = 10.0  # a budget more than this factor outside the fitted compute range is flagged


@dataclass(frozen=True)
class ZooModel:
    """One size of the model zoo: its config name, parameter count, and training recipe (None without one)."""

    name: str
    params: int
    recipe: str | None


@dataclass(frozen=True)
class ComputePlan:
    """The plan for one compute budget. Estimates carry the fit's bootstrap 95 % interval (NaN without one)."""

    compute: float
    params: Estimate  # N_opt, closed form
    tokens: Estimate  # D_opt = C / (6·N_opt)
    params_numeric: float  # N_opt found by a numeric search (equals the closed form)
    tokens_numeric: float
    loss: Estimate  # L(N_opt, D_opt)
    model: str  # the zoo size nearest N_opt (in log N)
    model_params: int
    model_tokens: float  # C / (6·N) for that size
    model_loss: Estimate  # L at that size and token count
    tokens_per_step: int | None  # of the recipe (or given)
    train_steps: int | None  # optimizer steps to see model_tokens at tokens_per_step
    extrapolation: float  # how far C lies outside the fitted compute range (1 = inside; NaN: no range known)
    warnings: tuple[str, ...] = ()


def model_zoo(conf_dir: str | Path = CONF_DIR) -> list[ZooModel]:
    """The sizes of `conf/model/vqlm_*.yaml` (parameter counts from ModelConfig), smallest first; each names
    its recipe `conf/experiment/lvm_<size>.yaml` when there is one."""
    conf_dir = Path(conf_dir)
    zoo = []
    for path in sorted((conf_dir / "model").glob("vqlm_*.yaml")):
        fields = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        fields.pop("_target_", None)
        config = ModelConfig(**fields)
        recipe = "lvm_" + path.stem.removeprefix("vqlm_")
        has_recipe = (conf_dir / "experiment" / f"{recipe}.yaml").is_file()
        zoo.append(ZooModel(config.name, config.num_parameters, recipe if has_recipe else None))
    if not zoo:
        raise FileNotFoundError(f"{conf_dir / 'model'}: no vqlm_*.yaml model configs")
    return sorted(zoo, key=lambda model: model.params)


def recipe_tokens_per_step(recipe: str, conf_dir: str | Path = CONF_DIR) -> int:
    """Tokens per optimizer step of `conf/train.yaml` with `experiment=<recipe>`: data.batch_size (the global
    micro-batch, as the recipes define it) × data.seq_len × trainer.accumulate_grad_batches."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"experiment={recipe}"]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (lvm.plan): its search path is conf/
        cfg = compose("train", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1) or 1
    return int(cfg.data.batch_size) * int(cfg.data.seq_len) * int(accumulate)


def compute_from_gpu_hours(gpu_hours: float, gpu: str, mfu: float, dtype: torch.dtype = torch.bfloat16) -> float:
    """FLOPs a budget of GPU hours buys: hours × 3600 × the chip's dense peak in `dtype` × MFU."""
    if gpu_hours <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"gpu_hours must be > 0 and mfu in (0, 1], got gpu_hours={gpu_hours}, mfu={mfu}")
    return gpu_hours * 3600.0 * chip_peak_flops(gpu, dtype)[1] * mfu


def nearest_model(zoo: Sequence[ZooModel], params: float) -> ZooModel:
    """The zoo size closest to `params` on a log scale (sizes are spread over decades)."""
    return min(zoo, key=lambda model: abs(math.log(model.params) - math.log(params)))


def _extrapolation(compute: float, compute_range: tuple[float, float] | None) -> float:
    if compute_range is None:
        return float("nan")
    low, high = compute_range
    return max(compute / high, low / compute, 1.0)


def plan_compute(
    fit: LossSurfaceFit | LossSurface,
    compute: float,
    zoo: Sequence[ZooModel] | None = None,
    tokens_per_step: int | None = None,
    recipe_tokens: Callable[[str], int] = recipe_tokens_per_step,
) -> ComputePlan:
    """The compute-optimal plan for `compute` FLOPs under `fit` (a LossSurfaceFit, whose replicates give the
    intervals, or a bare LossSurface such as HOFFMANN_2022). `zoo` defaults to `model_zoo()`;
    `tokens_per_step` defaults to the chosen size's recipe (`recipe_tokens(recipe)`); without either the
    steps are left out."""
    if not compute > 0:
        raise ValueError(f"compute must be a positive number of FLOPs, got {compute}")
    surface = fit.surface if isinstance(fit, LossSurfaceFit) else fit
    replicates = fit.replicates if isinstance(fit, LossSurfaceFit) else ()
    zoo = model_zoo() if zoo is None else zoo

    def estimate(of_surface: Callable[[LossSurface], float]) -> Estimate:
        samples = [of_surface(s) for s in replicates if s.alpha > 0 and s.beta > 0]
        return bootstrap_estimate(float(of_surface(surface)), samples)

    params = estimate(lambda s: float(s.optimal_allocation(compute)[0]))
    tokens = estimate(lambda s: float(s.optimal_allocation(compute)[1]))
    params_numeric, tokens_numeric = surface.numeric_optimum(compute)
    model = nearest_model(zoo, params.value)
    model_tokens = compute / (6.0 * model.params)
    if tokens_per_step is None and model.recipe is not None:
        tokens_per_step = recipe_tokens(model.recipe)
    extrapolation = _extrapolation(compute, fit.compute_range if isinstance(fit, LossSurfaceFit) else None)

    warnings = []
    if extrapolation > EXTRAPOLATION_WARNING:
        low, high = fit.compute_range
        warnings.append(
            f"extrapolated {extrapolation:.2g}× beyond the fitted compute range ({low:.2g} to {high:.2g} FLOPs): "
            "trust the exponents, not the digits"
        )
    smallest, largest = zoo[0], zoo[-1]
    if params.value < smallest.params / 2 or params.value > largest.params * 2:
        warnings.append(
            f"N_opt = {params.value:.3g} lies outside the zoo ({smallest.name} … {largest.name}): "
            f"{model.name} is the nearest size, not an optimal one"
        )
    return ComputePlan(
        compute=float(compute),
        params=params,
        tokens=tokens,
        params_numeric=params_numeric,
        tokens_numeric=tokens_numeric,
        loss=estimate(lambda s: float(s.loss(*s.optimal_allocation(compute)))),
        model=model.name,
        model_params=model.params,
        model_tokens=model_tokens,
        model_loss=estimate(lambda s: float(s.loss(model.params, model_tokens))),
        tokens_per_step=tokens_per_step,
        train_steps=None if tokens_per_step is None else math.ceil(model_tokens / tokens_per_step),
        extrapolation=extrapolation,
        warnings=tuple(warnings),
    )

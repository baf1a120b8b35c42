"""The original's optimisation recipe (the original's EasyLM/optimizers.py): AdamW on every parameter, warmup then
cosine to end_lr."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float, exclude_norms_and_embeddings: bool = False) -> list[dict]:
    """AdamW parameter groups. The original decays every parameter (its exclusion list is empty);
    `exclude_norms_and_embeddings=True` gives the common GPT-style alternative for ablations."""
    if not exclude_norms_and_embeddings:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (decay if isinstance(module, nn.Linear) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine_lr(step: int, peak_lr: float, end_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """lr(t) = peak·t/W (t < W); end + (peak − end)·½(1 + cos(π(t − W)/(D − W))) (W ≤ t < D); end after.

    `decay_steps` counts from step 0, warmup included, as in EasyLM.
    """
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    if step >= decay_steps:
        return end_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return end_lr + (peak_lr - end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int, end_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_cosine_lr` per optimizer step, with each group's initial lr as the peak."""
    if decay_steps < warmup_steps:
        raise ValueError(f"scheduler: decay_steps {decay_steps} must be ≥ warmup_steps {warmup_steps}")

    def factor_for(peak: float) -> Callable[[int], float]:
        return lambda step: warmup_cosine_lr(step, peak, end_lr, warmup_steps, decay_steps) / peak

    peaks = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(peak) for peak in peaks])


def build_adamw(
    model: nn.Module,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    exclude_norms_and_embeddings: bool = False,
) -> torch.optim.AdamW:
    """AdamW with the original's defaults (b2 0.95, eps 1e-8, decay 0.1 on every parameter)."""
    groups = parameter_groups(model, weight_decay, exclude_norms_and_embeddings)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)

"""Formulas of ../shared/reference/lvm-spec.md written out independently of lvm/, for tests to check against."""

import math


def spec_lr(step: int, peak: float, end: float, warmup: int, decay: int) -> float:
    """Spec §4: linear warmup 0 → peak over `warmup`, cosine to `end` at `decay` (counted from 0), then flat."""
    if step < warmup:
        return peak * step / warmup
    if step >= decay:
        return end
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (decay - warmup)))

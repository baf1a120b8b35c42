"""Frame clips: `n_frames` frames `stride` apart, where they fit in a video, and seeded random starts."""

from __future__ import annotations

import random
import sys


def clip_span(n_frames: int, stride: int) -> int:
    """How many consecutive source frames a clip of `n_frames` at `stride` covers."""
    return (n_frames - 1) * stride + 1


def clip_indices(start: int, n_frames: int, stride: int) -> list[int]:
    """Frame indices of a clip: start, start + stride, … (`n_frames` of them)."""
    return [start + i * stride for i in range(n_frames)]


def sample_clip_start(n_available: int, n_frames: int, stride: int, rng: random.Random) -> int | None:
    """A uniform random start such that the whole clip fits, or None when it cannot fit."""
    last_start = n_available - clip_span(n_frames, stride)
    if last_start < 0:
        return None
    return rng.randint(0, last_start)


def largest_fitting_stride(n_available: int, n_frames: int) -> int:
    """The largest stride at which `n_frames` fit into `n_available` frames (0 when none does)."""
    if n_frames <= 1:
        return sys.maxsize if n_available >= n_frames else 0
    return max((n_available - 1) // (n_frames - 1), 0) if n_available >= n_frames else 0

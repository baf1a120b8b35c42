"""What the sentence builders share beyond `lvm.media` (reading, file listing, skip bookkeeping) and
`lvm.data.image_sentences` (the `ImageSentence` type): sampling a frame clip with a random stride and
start, drawing groups of loadable items, and checking counts.

A builder turns files into `ImageSentence`s. A file it cannot use (corrupt, truncated, too short,
unmatched) is either recorded in a `SkipCounter` and skipped (with a `SkippedInputWarning` naming
it), or, with ``strict=True``, raised as a `BadInputError` naming the file. Nothing is dropped
without a record.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from lvm.media.clips import largest_fitting_stride, sample_clip_start

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")


# --- frame sampling -----------------------------------------------------------------------------


def sample_clip(n_available: int, n_frames: int, max_stride: int, rng: random.Random) -> tuple[int, int] | None:
    """(start, stride) with stride uniform in [1, max_stride] capped so the clip fits, and a uniform
    random start; None when even stride 1 does not fit."""
    if max_stride < 1:
        raise ValueError(f"max_stride must be ≥ 1, got {max_stride}")
    cap = min(max_stride, largest_fitting_stride(n_available, n_frames))
    if cap < 1:
        return None
    stride = rng.randint(1, cap)
    start = sample_clip_start(n_available, n_frames, stride, rng)
    assert start is not None  # the cap guarantees it fits
    return start, stride


def draw_groups(
    items: Iterable[Item],
    group_size: int,
    rng: random.Random,
    load: Callable[[Item], Loaded | None],
) -> Iterator[list[tuple[Item, Loaded]]]:
    """One epoch of random groups: `items` in a fresh random order, cut into groups of
    `group_size`. An item whose `load` returns None (unreadable, already recorded by `load`) is
    passed over and the next item takes its place; the incomplete remainder is dropped, so each
    item appears at most once per epoch."""
    order = list(items)
    rng.shuffle(order)
    group: list[tuple[Item, Loaded]] = []
    for item in order:
        loaded = load(item)
        if loaded is None:
            continue
        group.append((item, loaded))
        if len(group) == group_size:
            yield group
            group = []


def check_positive(**values: int) -> None:
    """Refuse nonsensical counts (n_frames=0, n_shots=-1 …) up front, naming the argument."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be ≥ 1, got {value}")

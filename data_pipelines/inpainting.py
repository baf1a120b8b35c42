"""Inpainting sentences: `n_shots` (masked, original) pairs of random images, masked first.

A mask is one of two kinds, drawn per image: with probability `hole_mask_ratio` one black square
("hole"); otherwise a grid of `patch_size` patches each kept with probability r, r ~ U[0, 1) drawn
per image ("patches"), the rest zeroed — the original's two modes.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipelines.common import check_positive, draw_groups
from lvm.data.image_sentences import ImageSentence
from lvm.media.files import IMAGE_EXTENSIONS, list_files
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter


def draw_mask(
    height: int, width: int, patch_size: int, hole_mask_ratio: float, rng: random.Random
) -> tuple[np.ndarray, dict]:
    """A random inpainting mask: (hidden, description), `hidden` a bool (height, width) array, True
    where the image is zeroed, and `description` a JSON-able dict from which `mask_from_description`
    rebuilds it.

    - ``{"mode": "hole", "top", "left", "side"}``: one square, side an integer in
      [int(0.1·m), int(0.5·m)) for m = min(height, width) (the original's `randint` bounds; at least 1
      pixel so tiny images still get a hole), placed uniformly so it lies inside the image.
    - ``{"mode": "patches", "patch_size", "keep_probability", "kept"}``: the image cut into
      `patch_size` patches in row-major order (edge patches may be smaller when the size is not a
      multiple); `kept` lists the flat indices of the patches left visible.
    """
    if rng.random() < hole_mask_ratio:
        shortest = min(height, width)
        low = max(1, int(0.1 * shortest))
        high = max(low, int(0.5 * shortest) - 1)  # randint is inclusive; the original's bound is not
        side = rng.randint(low, high)
        description = {
            "mode": "hole",
            "top": rng.randint(0, height - side),
            "left": rng.randint(0, width - side),
            "side": side,
        }
    else:
        rows, cols = -(-height // patch_size), -(-width // patch_size)
        keep_probability = rng.random()
        kept = [i for i in range(rows * cols) if rng.random() < keep_probability]
        description = {"mode": "patches", "patch_size": patch_size, "keep_probability": keep_probability, "kept": kept}
    return mask_from_description(height, width, description), description


def mask_from_description(height: int, width: int, description: dict) -> np.ndarray:
    """The bool (height, width) mask, True where hidden, that a `draw_mask` description stands for."""
    if description["mode"] == "hole":
        hidden = np.zeros((height, width), dtype=bool)
        top, left, side = description["top"], description["left"], description["side"]
        hidden[top : top + side, left : left + side] = True
        return hidden
    if description["mode"] == "patches":
        patch = description["patch_size"]
        cols = -(-width // patch)
        hidden = np.ones((height, width), dtype=bool)
        for index in description["kept"]:
            row, col = divmod(index, cols)
            hidden[row * patch : (row + 1) * patch, col * patch : (col + 1) * patch] = False
        return hidden
    raise ValueError(f"unknown mask mode {description['mode']!r}")


def inpainting_sentences(
    root: str | os.PathLike,
    size: int,
    n_shots: int = 8,
    patch_size: int = 32,
    hole_mask_ratio: float = 0.3,
    n_epochs: int = 1,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[ImageSentence]:
    """Each epoch shuffles the images under `root` (the whole tree) afresh and cuts them into
    sentences of `n_shots` images, each giving the pair (masked, original): masked₁ original₁
    masked₂ original₂ … The mask is drawn on the resized image, afresh every time an image is used
    (the original draws it once and repeats it across epochs; a fresh mask is a fresh example).
    ``meta["masks"]`` describes each pair's mask (see `draw_mask`).

    Unreadable images are recorded once and passed over (raised when ``strict``); fewer images than
    `n_shots` is refused.
    """
    check_positive(size=size, n_shots=n_shots, patch_size=patch_size, n_epochs=n_epochs)
    if not 0.0 <= hole_mask_ratio <= 1.0:
        raise ValueError(f"hole_mask_ratio must be in [0, 1], got {hole_mask_ratio}")
    paths = list_files(root, extensions)
    if len(paths) < n_shots:
        raise ValueError(f"{root}: {len(paths)} images cannot fill n_shots={n_shots}")
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    skips.saw(len(paths))
    load = image_loader(size, skips, strict)
    rng = random.Random(rng_seed)
    for epoch in range(n_epochs):
        for group in draw_groups(paths, n_shots, rng, load):
            images, source, masks = [], [], []
            for path, original in group:
                hidden, description = draw_mask(size, size, patch_size, hole_mask_ratio, rng)
                masked = original.copy()
                masked[hidden] = 0
                images += [masked, original]
                source += [path, path]
                masks.append(description)
            yield ImageSentence(
                images=images,
                kind="inpainting",
                source=source,
                meta={"n_shots": n_shots, "epoch": epoch, "masks": masks},
            )

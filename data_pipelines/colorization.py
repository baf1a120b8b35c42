"""Colorization sentences: `n_shots` (gray, colour) pairs of random images, gray first."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipelines.common import check_positive, draw_groups
from lvm.data.image_sentences import ImageSentence
from lvm.media.files import IMAGE_EXTENSIONS, expand_inputs
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter

# ITU-R BT.601 luma weights as the original writes them (they sum to 0.9999, not 1).
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])


def to_grayscale_rgb(image: np.ndarray) -> np.ndarray:
    """Gray = 0.2989 R + 0.5870 G + 0.1140 B, replicated to 3 channels (HWC in, HWC out).

    uint8 in → uint8 out, rounded to nearest (the original works on floats; rounding is the
    closest uint8 can get). Float in → float out, unrounded."""
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an HWC image with ≥ 3 channels, got shape {image.shape}")
    gray = image[..., :3].astype(np.float64) @ GRAY_WEIGHTS
    if image.dtype == np.uint8:
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    else:
        gray = gray.astype(image.dtype)
    return np.repeat(gray[..., None], 3, axis=2)


def colorization_sentences(
    paths: Sequence[str | os.PathLike],
    size: int,
    n_shots: int = 8,
    n_epochs: int = 1,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
) -> Iterator[ImageSentence]:
    """Each epoch shuffles `paths` afresh and cuts them into sentences of `n_shots` images, each
    image giving the pair (gray, colour): gray₁ colour₁ gray₂ colour₂ … Gray is computed on the
    resized image. Unreadable images are recorded once and passed over (raised when ``strict``);
    fewer images than `n_shots` is refused."""
    check_positive(size=size, n_shots=n_shots, n_epochs=n_epochs)
    paths = expand_inputs(paths, IMAGE_EXTENSIONS)  # folders, globs and .txt lists become their files
    if len(paths) < n_shots:
        raise ValueError(f"{len(paths)} images cannot fill n_shots={n_shots}")
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    skips.saw(len(paths))
    load = image_loader(size, skips, strict)
    rng = random.Random(rng_seed)
    for epoch in range(n_epochs):
        for group in draw_groups(paths, n_shots, rng, load):
            images, source = [], []
            for path, colour in group:
                images += [to_grayscale_rgb(colour), colour]
                source += [path, path]
            yield ImageSentence(
                images=images,
                kind="colorization",
                source=source,
                meta={"n_shots": n_shots, "epoch": epoch},
            )

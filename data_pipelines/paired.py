"""Paired-annotation sentences: an input folder and an output folder (image → depth, edges, …)
matched by file stem; each sentence holds `n_shots` random pairs interleaved x1 y1 x2 y2 …"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipelines.common import check_positive, draw_groups
from lvm.data.image_sentences import ImageSentence
from lvm.media.files import IMAGE_EXTENSIONS, list_files
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter, skip_or_raise


def files_by_stem(root: str, extensions: Sequence[str], skips: SkipCounter, strict: bool) -> dict[str, str]:
    """Stem (path relative to `root` without its suffix, so nested trees match too) → file.
    Stems held by several files (a.png and a.jpg) are ambiguous: all of them are recorded and left
    out rather than guessing which one was meant."""
    holders: dict[str, list[str]] = defaultdict(list)
    paths = list_files(root, extensions)
    skips.saw(len(paths))
    for path in paths:
        holders[os.path.splitext(os.path.relpath(path, root))[0]].append(path)
    unique = {}
    for stem, held in holders.items():
        if len(held) == 1:
            unique[stem] = held[0]
        else:
            for path in held:
                skip_or_raise(path, f"ambiguous: {len(held)} files have stem '{stem}'", skips, strict)
    return unique


def match_pairs(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    skips: SkipCounter,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[tuple[str, str, str]]:
    """(stem, input path, output path) for every stem present on both sides, in sorted stem order;
    files whose stem is on one side only are recorded as skipped (raised when ``strict``)."""
    input_dir, output_dir = str(input_dir), str(output_dir)
    inputs = files_by_stem(input_dir, extensions, skips, strict)
    outputs = files_by_stem(output_dir, extensions, skips, strict)
    for stem in sorted(inputs.keys() - outputs.keys()):
        skip_or_raise(inputs[stem], f"no match in {output_dir}", skips, strict)
    for stem in sorted(outputs.keys() - inputs.keys()):
        skip_or_raise(outputs[stem], f"no match in {input_dir}", skips, strict)
    return [(stem, inputs[stem], outputs[stem]) for stem in sorted(inputs.keys() & outputs.keys())]


def paired_sentences(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    size: int,
    n_shots: int = 8,
    n_epochs: int = 1,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[ImageSentence]:
    """Each epoch shuffles the matched pairs afresh and cuts them into sentences of `n_shots` pairs,
    laid out x1 y1 x2 y2 … (so each pair appears at most once per epoch, in new company every
    epoch). A pair with an unreadable side is recorded once and passed over (raised when ``strict``).
    Fewer matched pairs than `n_shots` is refused."""
    check_positive(size=size, n_shots=n_shots, n_epochs=n_epochs)
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    pairs = match_pairs(input_dir, output_dir, skips, strict, extensions)
    if len(pairs) < n_shots:
        raise ValueError(f"{input_dir} and {output_dir}: {len(pairs)} matched pairs cannot fill n_shots={n_shots}")
    load_image = image_loader(size, skips, strict)
    bad_pairs: set[str] = set()

    def load_pair(pair: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray] | None:
        stem, x_path, y_path = pair
        if stem in bad_pairs:
            return None
        x, y = load_image(x_path), load_image(y_path)
        if x is None or y is None:
            bad_pairs.add(stem)
            good_path = x_path if x is not None else y_path if y is not None else None
            if good_path is not None:
                skips.skip(good_path, f"its pair's other side is unreadable (stem '{stem}')")
            return None
        return x, y

    rng = random.Random(rng_seed)
    for epoch in range(n_epochs):
        for group in draw_groups(pairs, n_shots, rng, load_pair):
            images, source = [], []
            for (_, x_path, y_path), (x, y) in group:
                images += [x, y]
                source += [x_path, y_path]
            yield ImageSentence(
                images=images,
                kind="paired",
                source=source,
                meta={"n_shots": n_shots, "epoch": epoch, "stems": [stem for (stem, _, _), _ in group]},
            )

"""Multi-dataset sentences ("chain of tasks"): the same image under several annotations (image,
depth, edges, normals, segmentation …) from aligned folders matched by file stem; `n_shots` images
per sentence, each followed by its annotations, in one task order per sentence."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from data_pipelines.common import check_positive, draw_groups
from data_pipelines.paired import files_by_stem
from lvm.data.image_sentences import ImageSentence
from lvm.media.files import IMAGE_EXTENSIONS, split_path_list
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter, skip_or_raise


def match_aligned(
    roots: Sequence[str],
    skips: SkipCounter,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[tuple[str, list[str]]]:
    """(stem, [file in roots[0], file in roots[1], …]) for every stem present in all `roots`, in
    sorted stem order. A file whose stem some root lacks is recorded as skipped (raised when
    ``strict``), naming the roots that lack it."""
    by_root = [files_by_stem(root, extensions, skips, strict) for root in roots]
    complete = set.intersection(*(set(files) for files in by_root))
    for files in by_root:
        for stem in sorted(files.keys() - complete):
            missing = [root for root, other in zip(roots, by_root) if stem not in other]
            skip_or_raise(files[stem], f"no match in {', '.join(missing)}", skips, strict)
    return [(stem, [files[stem] for files in by_root]) for stem in sorted(complete)]


def multi_dataset_sentences(
    roots: str | Iterable[str | os.PathLike],
    size: int,
    n_shots: int = 3,
    shuffle_tasks: bool = True,
    n_epochs: int = 1,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[ImageSentence]:
    """Sentences of `n_shots` stems × one image per root: for each stem its file in every root.

    `roots` are aligned folders (the image folder first, then one per annotation), as a list or one
    ``::``-separated string; files are matched by stem (path relative to the root without suffix).
    Without `shuffle_tasks` each shot follows the order of `roots` (image, then its annotations).
    With it, each sentence draws one permutation of the roots — the image's place included, as in
    the original — and every shot of the sentence follows it, so the sentence still reads as one
    chain of tasks repeated. ``meta["task_order"]`` gives the root indices in sentence order and
    ``meta["tasks"]`` their folder names.

    Each epoch shuffles the matched stems afresh and cuts them into sentences (each stem at most once
    per epoch). A stem with an unreadable file is recorded once (with its partners) and passed over
    (raised when ``strict``); fewer matched stems than `n_shots` is refused.
    """
    check_positive(size=size, n_shots=n_shots, n_epochs=n_epochs)
    roots = split_path_list(roots)
    if len(roots) < 2:
        raise ValueError(f"multi-dataset sentences need ≥ 2 aligned folders, got {roots}")
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    groups = match_aligned(roots, skips, strict, extensions)
    if len(groups) < n_shots:
        raise ValueError(f"{' :: '.join(roots)}: {len(groups)} matched stems cannot fill n_shots={n_shots}")
    names = [os.path.basename(os.path.normpath(root)) for root in roots]
    load_image = image_loader(size, skips, strict)
    bad_stems: set[str] = set()

    def load_group(group: tuple[str, list[str]]) -> list[np.ndarray] | None:
        stem, paths = group
        if stem in bad_stems:
            return None
        images = [load_image(path) for path in paths]  # every file, so each bad one is recorded
        if any(image is None for image in images):
            bad_stems.add(stem)
            for path, image in zip(paths, images):
                if image is not None:
                    skips.skip(path, f"an aligned file is unreadable (stem '{stem}')")
            return None
        return images

    rng = random.Random(rng_seed)
    for epoch in range(n_epochs):
        for group in draw_groups(groups, n_shots, rng, load_group):
            order = list(range(len(roots)))
            if shuffle_tasks:
                rng.shuffle(order)
            images, source = [], []
            for (_, paths), loaded in group:
                images += [loaded[i] for i in order]
                source += [paths[i] for i in order]
            yield ImageSentence(
                images=images,
                kind="multi_dataset",
                source=source,
                meta={
                    "epoch": epoch,
                    "n_shots": n_shots,
                    "stems": [stem for (stem, _), _ in group],
                    "task_order": order,
                    "tasks": [names[i] for i in order],
                },
            )

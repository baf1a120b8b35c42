"""Category sentences: `n_shots` × `images_per_shot` images of one class, from an ImageNet-style tree
(one sub-folder per class)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

from data_pipelines.common import check_positive, draw_groups
from lvm.data.image_sentences import ImageSentence
from lvm.media.files import IMAGE_EXTENSIONS, list_files, natural_sort_key
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter, skip_or_raise


def class_folders(
    root: str | os.PathLike, extensions: Sequence[str], skips: SkipCounter, strict: bool
) -> dict[str, list[str]]:
    """Class name (sub-folder of `root`) → its images (anywhere below it), in natural order.
    Images lying directly in `root` belong to no class: they are recorded as skipped (raised when
    ``strict``)."""
    root = str(root)
    loose = list_files(root, extensions, recursive=False)
    skips.saw(len(loose))
    for path in loose:
        skip_or_raise(path, "not inside a class folder", skips, strict)
    names = sorted(
        (entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")),
        key=natural_sort_key,
    )
    return {name: list_files(os.path.join(root, name), extensions) for name in names}


def category_sentences(
    root: str | os.PathLike,
    size: int,
    images_per_shot: int = 4,
    n_shots: int = 4,
    n_epochs: int = 1,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[ImageSentence]:
    """Sentences of ``n_shots × images_per_shot`` distinct images, all of ONE class.

    The original script meant one class per sentence but, by a bug, mixes classes; we implement the
    intent. Each epoch shuffles every class's images afresh and cuts them into sentences (each image
    at most once per epoch); the sentences of all classes come out interleaved in a random order, so
    a stream read from the start is not one class after another.

    A class with fewer images than one sentence needs is recorded as skipped (raised when
    ``strict``). Unreadable images are recorded once and passed over (raised when ``strict``).
    """
    check_positive(size=size, images_per_shot=images_per_shot, n_shots=n_shots, n_epochs=n_epochs)
    per_sentence = n_shots * images_per_shot
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    classes = {}
    for name, paths in class_folders(root, extensions, skips, strict).items():
        skips.saw(len(paths))
        if len(paths) < per_sentence:
            reason = f"class '{name}' has {len(paths)} images, needs {per_sentence}"
            skip_or_raise(os.path.join(str(root), name), reason, skips, strict)
        else:
            classes[name] = paths
    load = image_loader(size, skips, strict)
    rng = random.Random(rng_seed)
    for epoch in range(n_epochs):
        groups = {name: draw_groups(paths, per_sentence, rng, load) for name, paths in classes.items()}
        # One ticket per sentence a class can give; drawing tickets in random order interleaves the
        # classes. A class whose unreadable images leave it a sentence short just gives one fewer.
        tickets = [name for name, paths in classes.items() for _ in range(len(paths) // per_sentence)]
        rng.shuffle(tickets)
        for name in tickets:
            group = next(groups[name], None)
            if group is None:
                continue
            yield ImageSentence(
                images=[image for _, image in group],
                kind="category",
                source=[path for path, _ in group],
                meta={"class": name, "epoch": epoch, "n_shots": n_shots, "images_per_shot": images_per_shot},
            )

"""Multi-view sentences (CO3D): `n_frames` views of one object in camera order at a random stride,
`n_shots` objects per sentence."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipelines.common import check_positive, draw_groups, sample_clip
from lvm.data.image_sentences import ImageSentence
from lvm.media.clips import clip_indices
from lvm.media.files import IMAGE_EXTENSIONS, list_files, natural_sort_key
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter, skip_or_raise

# CO3D keeps an object's views in <category>/<object>/images/ next to masks/ and depths/.
VIEWS_SUBFOLDER = "images"


def subfolders(folder: str) -> list[str]:
    """Visible sub-folders of `folder`, naturally sorted."""
    names = [e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
    return [os.path.join(folder, name) for name in sorted(names, key=natural_sort_key)]


def object_views(root: str | os.PathLike, extensions: Sequence[str]) -> dict[str, list[str]]:
    """Object name ("<category>/<object>") → its views in camera order (natural sort of file names).

    Views are the images directly inside the object folder or, when it holds none, inside its
    ``images/`` sub-folder (CO3D's layout, whose masks/ and depths/ are left alone)."""
    root = str(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a directory")
    objects = {}
    for category in subfolders(root):
        for obj in subfolders(category):
            views = list_files(obj, extensions, recursive=False)
            if not views and os.path.isdir(os.path.join(obj, VIEWS_SUBFOLDER)):
                views = list_files(os.path.join(obj, VIEWS_SUBFOLDER), extensions, recursive=False)
            objects[os.path.relpath(obj, root)] = views
    return objects


def multiview_sentences(
    root: str | os.PathLike,
    size: int,
    n_frames: int = 4,
    n_shots: int = 4,
    max_stride: int = 4,
    n_epochs: int = 1,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[ImageSentence]:
    """Sentences of `n_shots` objects × `n_frames` views: object₁'s views, then object₂'s, …

    Each epoch shuffles the objects (of all categories) afresh and cuts them into sentences, so each
    object appears at most once per epoch. An object's views are taken in camera order at a stride
    uniform in [1, max_stride], capped so they fit, from a uniform random start — drawn afresh
    every time the object is used. ``meta["clips"]`` gives each object's name, start and stride.

    An object with fewer than `n_frames` views is recorded as skipped (raised when ``strict``). A
    clip that hits an unreadable view is dropped and the view recorded (raised when ``strict``); the
    object is passed over for that epoch and another takes its place.
    """
    check_positive(size=size, n_frames=n_frames, n_shots=n_shots, max_stride=max_stride, n_epochs=n_epochs)
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    objects = {}
    for name, views in object_views(root, extensions).items():
        skips.saw(len(views))
        if len(views) < n_frames:
            reason = f"{len(views)} views, needs {n_frames}"
            skip_or_raise(os.path.join(str(root), name), reason, skips, strict)
        else:
            objects[name] = views
    load = image_loader(size, skips, strict)
    rng = random.Random(rng_seed)

    def load_clip(name: str) -> tuple[list[str], list[np.ndarray], int, int] | None:
        views = objects[name]
        start, stride = sample_clip(len(views), n_frames, max_stride, rng)
        chosen = [views[i] for i in clip_indices(start, n_frames, stride)]
        images = []
        for path in chosen:
            image = load(path)
            if image is None:
                return None  # a gap would break the camera order
            images.append(image)
        return chosen, images, start, stride

    for epoch in range(n_epochs):
        for group in draw_groups(list(objects), n_shots, rng, load_clip):
            images, source, clips = [], [], []
            for name, (chosen, views, start, stride) in group:
                images += views
                source += chosen
                clips.append({"object": name, "start": start, "stride": stride})
            yield ImageSentence(
                images=images,
                kind="multiview",
                source=source,
                meta={"epoch": epoch, "n_frames": n_frames, "n_shots": n_shots, "clips": clips},
            )

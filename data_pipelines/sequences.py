"""Image-sequence sentences: ordered frames from a folder at a random stride ("sequence"), and
groups of unrelated images from a flat folder in shuffled order ("images")."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

from data_pipelines.common import check_positive, draw_groups, sample_clip
from lvm.data.image_sentences import ImageSentence
from lvm.media.clips import clip_indices
from lvm.media.files import IMAGE_EXTENSIONS, expand_inputs, list_files
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter, skip_or_raise


def sequence_sentences(
    folders: Sequence[str | os.PathLike],
    size: int,
    n_frames: int = 16,
    max_stride: int = 4,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    n_epochs: int = 1,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[ImageSentence]:
    """For each folder of frames (ordered by natural sort of file names) and each epoch: `n_frames`
    frames at a stride uniform in [1, max_stride], capped so the clip fits, from a uniform random
    start. A folder with fewer than `n_frames` frames is skipped (recorded). A clip that hits an
    unreadable frame is dropped and the frame recorded (raised when ``strict``): the sequence's
    order would be broken by leaving the frame out.
    """
    check_positive(size=size, n_frames=n_frames, max_stride=max_stride, n_epochs=n_epochs)
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    load = image_loader(size, skips, strict)
    rng = random.Random(rng_seed)
    for folder in folders:
        folder = str(folder)
        frame_paths = list_files(folder, extensions, recursive=False)
        skips.saw(len(frame_paths))
        if len(frame_paths) < n_frames:
            skip_or_raise(folder, f"{len(frame_paths)} frames, needs {n_frames}", skips, strict)
            continue
        for epoch in range(n_epochs):
            start, stride = sample_clip(len(frame_paths), n_frames, max_stride, rng)
            chosen = [frame_paths[i] for i in clip_indices(start, n_frames, stride)]
            images = []
            for path in chosen:
                image = load(path)
                if image is None:
                    break
                images.append(image)
            else:
                yield ImageSentence(
                    images=images,
                    kind="sequence",
                    source=chosen,
                    meta={"stride": stride, "start": start, "epoch": epoch, "folder": folder},
                )


def image_sentences(
    paths: Sequence[str | os.PathLike],
    size: int,
    n_images: int = 16,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    n_epochs: int = 1,
) -> Iterator[ImageSentence]:
    """Groups of `n_images` unrelated images: each epoch shuffles `paths` afresh and cuts them into
    groups (the remainder that does not fill a group is left for the next epoch's shuffle).
    Unreadable images are recorded once and passed over (raised when ``strict``)."""
    check_positive(size=size, n_images=n_images, n_epochs=n_epochs)
    paths = expand_inputs(paths, IMAGE_EXTENSIONS)  # folders, globs and .txt lists become their files
    if len(paths) < n_images:
        raise ValueError(f"{len(paths)} images cannot fill a sentence of n_images={n_images}")
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    skips.saw(len(paths))
    load = image_loader(size, skips, strict)
    rng = random.Random(rng_seed)
    for epoch in range(n_epochs):
        for group in draw_groups(paths, n_images, rng, load):
            yield ImageSentence(
                images=[image for _, image in group],
                kind="images",
                source=[path for path, _ in group],
                meta={"epoch": epoch},
            )

"""Multi-sequence sentences: aligned frame folders (a video's frames and its depth, flow, masks …);
for each of `n_shots` examples the same frame indices from every aligned folder."""

from __future__ import annotations

import glob
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from data_pipelines.common import check_positive, draw_groups, sample_clip
from lvm.data.image_sentences import ImageSentence
from lvm.media.clips import clip_indices
from lvm.media.files import IMAGE_EXTENSIONS, list_files, natural_sort_key, split_path_list
from lvm.media.images import image_loader
from lvm.media.skips import SkipCounter, skip_or_raise

_WILDCARD = re.compile(r"[*?[]")
# One example's clip: its paths and images (folder × frame), start and stride.
LoadedClip = tuple[list[list[str]], list[list[np.ndarray]], int, int]


def _parts(path: str) -> list[str]:
    return os.path.normpath(path).split(os.sep)


def aligned_folders(patterns: Sequence[str], skips: SkipCounter, strict: bool = False) -> list[tuple[str, list[str]]]:
    """(key, [folder matched by patterns[0], folder matched by patterns[1], …]) for every key all
    patterns match, in natural key order.

    A folder's key is what the pattern's wildcard components matched: ``frames/*`` and ``depth/*``
    align ``frames/clip7`` with ``depth/clip7`` (key ``clip7``), and CO3D's ``co3d/*/*/images`` and
    ``co3d/*/*/masks`` align by ``<category>/<object>``. Plain folders (no wildcards) all share the
    empty key, so a list of plain folders is one aligned group. A folder whose key some pattern
    lacks is recorded as skipped (raised when ``strict``)."""
    wildcards = [[i for i, part in enumerate(_parts(p)) if _WILDCARD.search(part)] for p in patterns]
    if len({len(w) for w in wildcards}) > 1:
        raise ValueError(
            f"patterns {list(patterns)} differ in their number of wildcard components, "
            "so their folders cannot be aligned"
        )
    by_pattern: list[dict[str, str]] = []
    for pattern, positions in zip(patterns, wildcards):
        folders = [path for path in glob.glob(pattern) if os.path.isdir(path)]
        if not folders:
            raise FileNotFoundError(f"{pattern}: matches no folder")
        by_pattern.append({"/".join(_parts(f)[i] for i in positions): f for f in folders})
    complete = set.intersection(*(set(folders) for folders in by_pattern))
    for folders in by_pattern:
        for key in sorted(folders.keys() - complete, key=natural_sort_key):
            missing = [p for p, other in zip(patterns, by_pattern) if key not in other]
            skip_or_raise(folders[key], f"no aligned folder in {', '.join(missing)}", skips, strict)
    return [(key, [folders[key] for folders in by_pattern]) for key in sorted(complete, key=natural_sort_key)]


def multi_sequence_sentences(
    roots: str | Iterable[str | os.PathLike],
    size: int,
    n_frames: int,
    n_shots: int = 2,
    max_stride: int = 4,
    interleave_frames: bool = False,
    n_epochs: int = 1,
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[ImageSentence]:
    """Sentences of `n_shots` examples, each the same `n_frames` frame indices (stride uniform in
    [1, max_stride], capped so they fit, random start) from every aligned folder.

    `roots` holds one glob per stream (the frames first, then e.g. depth), as a list or one
    ``::``-separated string; see `aligned_folders` for how folders are aligned. Frames are taken in
    natural file-name order and aligned by position, so aligned folders must hold equally many.

    Layout per example: each folder's clip in turn (f₁…fₙ of folder 1, then of folder 2, …), or with
    `interleave_frames` frame by frame (f₁ of every folder, then f₂, …) — the original writes both.
    ``meta["clips"]`` gives each example's key, start and stride.

    Each epoch shuffles the aligned groups afresh and cuts them into sentences (each group at most
    once per epoch). A group whose folders differ in frame count or hold fewer than `n_frames` is
    recorded as skipped (raised when ``strict``); a clip that hits an unreadable frame is dropped,
    the frame recorded (raised when ``strict``), and the group passed over for that epoch.
    """
    check_positive(size=size, n_frames=n_frames, n_shots=n_shots, max_stride=max_stride, n_epochs=n_epochs)
    patterns = split_path_list(roots)
    if not patterns:
        raise ValueError("roots is empty")
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    groups = []
    for key, folders in aligned_folders(patterns, skips, strict):
        frames = [list_files(folder, extensions, recursive=False) for folder in folders]
        skips.saw(sum(len(f) for f in frames))
        counts = [len(f) for f in frames]
        if len(set(counts)) > 1:
            reason = f"aligned folders hold different numbers of frames ({', '.join(map(str, counts))})"
        elif counts[0] < n_frames:
            reason = f"{counts[0]} frames, needs {n_frames}"
        else:
            groups.append((key, frames))
            continue
        for folder in folders:
            skip_or_raise(folder, reason, skips, strict)
    load = image_loader(size, skips, strict)
    rng = random.Random(rng_seed)

    def load_clip(group: tuple[str, list[list[str]]]) -> LoadedClip | None:
        _, frames = group
        start, stride = sample_clip(len(frames[0]), n_frames, max_stride, rng)
        chosen = [[paths[i] for i in clip_indices(start, n_frames, stride)] for paths in frames]
        images = []
        for paths in chosen:
            clip = [load(path) for path in paths]
            if any(image is None for image in clip):
                return None  # a gap would misalign the folders
            images.append(clip)
        return chosen, images, start, stride

    for epoch in range(n_epochs):
        for group in draw_groups(groups, n_shots, rng, load_clip):
            images, source, clips = [], [], []
            for (key, _), (chosen, clip_images, start, stride) in group:
                if interleave_frames:  # (folder, frame) → frame-major order
                    chosen, clip_images = [list(x) for x in zip(*chosen)], [list(x) for x in zip(*clip_images)]
                images += [image for row in clip_images for image in row]
                source += [path for row in chosen for path in row]
                clips.append({"key": key, "start": start, "stride": stride})
            yield ImageSentence(
                images=images,
                kind="multi_sequence",
                source=source,
                meta={
                    "epoch": epoch,
                    "n_frames": n_frames,
                    "n_shots": n_shots,
                    "interleave_frames": interleave_frames,
                    "clips": clips,
                },
            )

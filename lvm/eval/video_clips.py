"""Video examples for perplexity (evaluation/vqlm_demo/eval_video_perplexity.py): video files and frame
folders, one seeded clip of context frames + target frames from each."""

from __future__ import annotations

import glob
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from lvm.eval.examples import ImageExample
from lvm.media.clips import clip_indices, clip_span, sample_clip_start
from lvm.media.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_files, read_file_list, split_path_list
from lvm.media.images import ImageReadError, load_image, uint8_to_tensor
from lvm.media.skips import BadInputError, SkipCounter
from lvm.media.video import read_video_frames


@dataclass
class VideoSource:
    """A video file (`frames` None) or a frame folder (`frames`: its images in natural order). `key`
    names it in results and seeds its clip start, so a clip does not depend on the other videos."""

    key: str
    path: str
    frames: list[str] | None = None


def _frame_files(folder: str) -> list[str]:
    return list_files(folder, IMAGE_EXTENSIONS, recursive=False)


def _sources_in_folder(root: str) -> list[VideoSource]:
    """Every video file under `root`, and every folder under it (itself included) that holds images."""
    sources: list[VideoSource] = []
    frame_folders: set[str] = set()
    for path in list_files(root, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS):
        if path.lower().endswith(VIDEO_EXTENSIONS):
            sources.append(VideoSource(key=os.path.relpath(path, root), path=path))
        else:
            folder = os.path.dirname(path)
            if folder not in frame_folders:
                frame_folders.add(folder)
                key = os.path.relpath(folder, root)
                key = os.path.basename(os.path.normpath(root)) if key == "." else key
                sources.append(VideoSource(key=key, path=folder, frames=_frame_files(folder)))
    return sources


def find_videos(videos: str | os.PathLike | Iterable[str | os.PathLike]) -> list[VideoSource]:
    """The videos `videos` names: a folder gives every video file and every frame folder (a folder
    holding images) under it; a glob its matching video files and folders; a `.txt` file the paths it
    lists; a `::`-joined string or a list several of these. Anything else stands for itself."""
    sources: list[VideoSource] = []

    def add_path(path: str) -> None:
        if os.path.isdir(path):
            sources.append(
                VideoSource(key=os.path.basename(os.path.normpath(path)), path=path, frames=_frame_files(path))
            )
        else:
            sources.append(VideoSource(key=os.path.basename(path), path=path))

    for entry in split_path_list(videos):
        entry = os.path.expanduser(entry)
        if os.path.isdir(entry):
            sources += _sources_in_folder(entry)
        elif entry.endswith(".txt") and os.path.isfile(entry):
            for path in read_file_list(entry):
                add_path(path)
        elif glob.has_magic(entry):
            for path in sorted(glob.glob(entry, recursive=True)):
                if os.path.isdir(path) or path.lower().endswith(VIDEO_EXTENSIONS):
                    add_path(path)
        else:
            add_path(entry)
    return sources


def clip_start(n_available: int, n_frames: int, stride: int, seed: int, key: str) -> int | None:
    """The clip's first frame, uniform over the starts where it fits, drawn from
    `random.Random(f"{seed}:{key}")` (the same on every machine); None when the clip does not fit."""
    return sample_clip_start(n_available, n_frames, stride, random.Random(f"{seed}:{key}"))


def read_clip(
    source: VideoSource, n_frames: int, stride: int, seed: int, size: int, center_crop: float | None = None
) -> tuple[torch.Tensor | None, dict]:
    """The clip's frames (n_frames, 3, size, size) in [0, 1] and {"start", "stride", "n_frames_available"};
    frames None when the video is too short. Video files are decoded whole (at `size`, or at full size
    and their crop) and resized with OpenCV, as the original reads videos (`read_video_frames`);
    frame-folder images are read with PIL, as the original prepares images (`load_image`). Unreadable input raises
    BadInputError naming it."""
    if source.frames is not None:
        n_available = len(source.frames)
        start = clip_start(n_available, n_frames, stride, seed, source.key)
        frames = None
        if start is not None:
            try:
                frames = torch.stack(
                    [
                        load_image(source.frames[i], size=size, center_crop=center_crop)
                        for i in clip_indices(start, n_frames, stride)
                    ]
                )
            except (ImageReadError, OSError) as err:
                raise BadInputError(source.path, str(err)) from err
    else:
        if not os.path.isfile(source.path):
            raise BadInputError(source.path, "no such file or folder")
        decoded = read_video_frames(source.path, size, center_crop)
        n_available = len(decoded)
        start = clip_start(n_available, n_frames, stride, seed, source.key)
        frames = (
            None
            if start is None
            else torch.stack([uint8_to_tensor(decoded[i]) for i in clip_indices(start, n_frames, stride)])
        )
    return frames, {"start": start, "stride": stride, "n_frames_available": n_available}


def load_video_clips(
    sources: Iterable[VideoSource],
    size: int,
    n_context_frames: int = 15,
    n_target_frames: int = 1,
    stride: int = 8,
    seed: int = 0,
    center_crop: float | None = None,
    skips: SkipCounter | None = None,
    skip_bad: bool = False,
) -> Iterator[ImageExample]:
    """One example per video: the first `n_context_frames` frames of its clip as context, the last
    `n_target_frames` as targets. Too-short videos are recorded in `skips` and left out; unreadable
    ones raise BadInputError unless `skip_bad` (then recorded too)."""
    for name, value in {
        "n_context_frames": n_context_frames,
        "n_target_frames": n_target_frames,
        "stride": stride,
    }.items():
        if value < 1:
            raise ValueError(f"{name} must be ≥ 1, got {value}")
    skips = skips if skips is not None else SkipCounter()
    n_frames = n_context_frames + n_target_frames
    for source in sources:
        skips.saw()
        try:
            frames, meta = read_clip(source, n_frames, stride, seed, size, center_crop)
        except BadInputError as err:
            if not skip_bad:
                raise
            skips.skip(source.path, err.reason)
            continue
        if frames is None:
            skips.skip(
                source.path,
                f"too short: {meta['n_frames_available']} frames, a clip of {n_frames} "
                f"at stride {stride} needs {clip_span(n_frames, stride)}",
            )
            continue
        yield ImageExample(
            id=source.key,
            where=source.path,
            inputs=frames[:n_context_frames],
            targets=frames[n_context_frames:],
            meta={"path": source.path, **meta},
        )

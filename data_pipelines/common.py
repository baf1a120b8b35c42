"""What every sentence builder shares: the sentence type, skip bookkeeping, file listing, reading
images and videos, and sampling frame clips (stride, random start).

A builder turns files into `ImageSentence`s. A file it cannot use (corrupt, truncated, too short,
unmatched) is either recorded in a `SkipCounter` and skipped (with a `SkippedInputWarning` naming
it), or, with ``strict=True``, raised as a `BadInputError` naming the file. Nothing is dropped
without a record.
"""

from __future__ import annotations

import glob
import os
import random
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

import av
import cv2
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")


@dataclass
class ImageSentence:
    """One visual sentence: images (HWC uint8 RGB, all ``size``×``size``) in the order they are read."""

    images: list[np.ndarray]
    kind: str
    source: list[str]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


class BadInputError(ValueError):
    """A file a builder cannot use; the message starts with the file's path."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SkippedInputWarning(UserWarning):
    """Issued once per skip, naming the file, so a skip is visible even when nobody reads the counter
    (filter this category to silence them)."""


@dataclass
class SkipCounter:
    """Counts the files a builder looked at and records each one it skipped, with the reason.

    A builder calls `saw` for every input file it considers and `skip` for every one it leaves out;
    each skip also issues a `SkippedInputWarning` "<path>: skipped (<reason>)" unless ``warn=False``.
    `summary()` gives ``"skipped 2 of 40 files: a.mp4 (invalid data), b.png (truncated)"``.
    """

    files_seen: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warn: bool = True

    def saw(self, n_files: int = 1) -> None:
        """Count `n_files` more input files considered."""
        self.files_seen += n_files

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        """Record `path` as left out for `reason` (and warn, naming it)."""
        self.skipped.append((str(path), reason))
        if self.warn:
            warnings.warn(f"{path}: skipped ({reason})", SkippedInputWarning, stacklevel=2)

    @property
    def n_skipped(self) -> int:
        """Distinct files skipped (one file may be skipped for several reasons, e.g. per stride)."""
        return len({path for path, _ in self.skipped})

    @property
    def skipped_paths(self) -> list[str]:
        """Distinct skipped paths, in the order they were first skipped."""
        return list(dict.fromkeys(path for path, _ in self.skipped))

    def summary(self) -> str:
        """One line: how many files were skipped of how many seen, and each skip with its reason."""
        head = f"skipped {self.n_skipped} of {self.files_seen} files"
        if not self.skipped:
            return head
        return head + ": " + ", ".join(f"{path} ({reason})" for path, reason in self.skipped)

    def report(self, stream: TextIO | None = None) -> None:
        """Print `summary()` (to stdout by default)."""
        print(self.summary(), file=stream if stream is not None else sys.stdout)


def skip_or_raise(path: str | os.PathLike, reason: str, skips: SkipCounter, strict: bool) -> None:
    """Record `path` as skipped, or raise `BadInputError` naming it when ``strict``."""
    if strict:
        raise BadInputError(path, reason)
    skips.skip(path, reason)


# --- files -------------------------------------------------------------------------------------

def natural_sort_key(text: str) -> list:
    """Digits compare as numbers, so frame_2.png sorts before frame_10.png (zero-padded or not)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def list_files(root: str | os.PathLike, extensions: Iterable[str], recursive: bool = True) -> list[str]:
    """Paths of files under `root` whose suffix is one of `extensions` (case-insensitive), sorted
    naturally by path relative to `root`. Hidden files (``.name``, e.g. macOS ``._x.png``) are left
    out; a missing `root` is an error."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a directory")
    wanted = tuple(ext.lower() if ext.startswith(".") else "." + ext.lower() for ext in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(wanted):
                found.append(os.path.join(dirpath, name))
        if not recursive:
            break
    return sorted(found, key=lambda p: natural_sort_key(os.path.relpath(p, root)))


# --- reading ------------------------------------------------------------------------------------

def read_image(path: str | os.PathLike, size: int | None) -> np.ndarray:
    """Read an image as HWC uint8 RGB, resized to ``size``×``size`` without keeping the aspect ratio
    (PIL's default filter, as the original's preprocessing); ``size=None`` keeps its own size.
    Raises `BadInputError` naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # convert() forces the full decode, so truncation shows here
    except FileNotFoundError:
        raise
    except Image.UnidentifiedImageError:
        raise BadInputError(path, "not a readable image") from None
    except (OSError, EOFError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = "truncated" if "truncated" in str(error) else f"corrupt image ({error})"
        raise BadInputError(path, reason) from error
    if size is not None:
        rgb = rgb.resize((size, size))
    return np.asarray(rgb, dtype=np.uint8)


def read_image_or_skip(
    path: str | os.PathLike, size: int | None, skips: SkipCounter, strict: bool
) -> np.ndarray | None:
    """`read_image`, or None after recording the skip (raises instead when ``strict``)."""
    try:
        return read_image(path, size)
    except BadInputError as error:
        skip_or_raise(path, error.reason, skips, strict)
        return None


def image_loader(
    size: int | None, skips: SkipCounter, strict: bool
) -> Callable[[str], np.ndarray | None]:
    """`read_image_or_skip` that remembers failures: across epochs a bad file is recorded once and
    not decoded again."""
    bad: set[str] = set()

    def load(path: str) -> np.ndarray | None:
        if path in bad:
            return None
        image = read_image_or_skip(path, size, skips, strict)
        if image is None:
            bad.add(path)
        return image

    return load


def _check_crop_fraction(center_crop: float) -> None:
    if not 0.0 < center_crop <= 1.0:
        raise ValueError(f"center_crop: expected a fraction in (0, 1], got {center_crop}")


def crop_video_frame(frame: np.ndarray, center_crop: float) -> np.ndarray:
    """The central `center_crop` fraction of the frame's height and of its width, sliced as the original's
    video readers slice it (`evaluation/vqlm_demo/utils.py`: `read_frames_from_video`)."""
    _check_crop_fraction(center_crop)
    height, width = frame.shape[:2]
    return frame[int((1 - center_crop) * height / 2):int((1 + center_crop) * height / 2),
                 int((1 - center_crop) * width / 2):int((1 + center_crop) * width / 2)]


def resize_video_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """HWC uint8 frame → ``size``×``size`` with OpenCV's `cv2.resize` (INTER_LINEAR, no antialiasing when
    shrinking), exactly as the original resizes video frames, so our codes match those LVM-7B was trained
    on. Resizing acts on each channel alone, so RGB here gives the pixels of the original's BGR resize."""
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)


def read_video_frames(
    path: str | os.PathLike, size: int | None, center_crop: float | None = None
) -> list[np.ndarray]:
    """Decode every frame of the first video stream as HWC uint8 RGB: centre-cropped to the `center_crop`
    fraction of each side when given (`crop_video_frame`), then resized to ``size``×``size`` with
    OpenCV (`resize_video_frame`); `size=None` keeps the decoded size. The whole video is held in
    memory: fine for clips, not for hour-long files.

    PyAV decodes (through FFmpeg, as OpenCV's `VideoCapture` does, so the decoded frames are the same);
    OpenCV resizes, as the original does. Image files are read with PIL (`read_image`), as the original
    reads them.

    Raises `BadInputError` naming the file when it cannot be opened, has no video stream, fails
    while decoding, or yields fewer frames than its header declares (a file cut short after its
    index, which FFmpeg otherwise decodes without complaint).
    """
    if center_crop is not None:
        _check_crop_fraction(center_crop)  # here, so a bad value is not reported as a bad file
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInputError(path, "no video stream")
            stream = container.streams.video[0]
            declared = stream.frames  # 0 when the container does not say
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                if center_crop is not None:
                    rgb = crop_video_frame(rgb, center_crop)
                if size is not None:
                    rgb = resize_video_frame(rgb, size)
                frames.append(rgb)
    except BadInputError:
        raise
    except FileNotFoundError:  # not a bad file to skip: a path that names nothing
        raise FileNotFoundError(f"{path}: no such video file") from None
    except (av.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise BadInputError(path, reason.lower()) from error
    if not frames:
        raise BadInputError(path, "no frames decoded")
    if declared and len(frames) < declared:
        raise BadInputError(path, f"truncated: decoded {len(frames)} of {declared} frames")
    return frames


# --- frame sampling -----------------------------------------------------------------------------

def clip_span(n_frames: int, stride: int) -> int:
    """How many consecutive source frames a clip of `n_frames` at `stride` covers."""
    return (n_frames - 1) * stride + 1


def clip_indices(start: int, n_frames: int, stride: int) -> list[int]:
    """Frame indices of a clip: start, start + stride, … (`n_frames` of them)."""
    return [start + i * stride for i in range(n_frames)]


def sample_clip_start(n_available: int, n_frames: int, stride: int, rng: random.Random) -> int | None:
    """A uniform random start such that the whole clip fits, or None when it cannot fit."""
    last_start = n_available - clip_span(n_frames, stride)
    if last_start < 0:
        return None
    return rng.randint(0, last_start)


def largest_fitting_stride(n_available: int, n_frames: int) -> int:
    """The largest stride at which `n_frames` fit into `n_available` frames (0 when none does)."""
    if n_frames <= 1:
        return sys.maxsize if n_available >= n_frames else 0
    return max((n_available - 1) // (n_frames - 1), 0) if n_available >= n_frames else 0


def sample_clip(
    n_available: int, n_frames: int, max_stride: int, rng: random.Random
) -> tuple[int, int] | None:
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


def split_path_list(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """A list of paths (or globs) given either as a sequence or as one string with the original's
    ``::`` separator ("rgb::depth::edges"), the form a command line passes most easily."""
    if isinstance(paths, (str, os.PathLike)):
        return [part for part in str(paths).split("::") if part]
    return [str(path) for path in paths]


def read_file_list(path: str | os.PathLike) -> list[str]:
    """The paths a text file lists, one per line: relative ones are relative to the list's folder;
    blank lines and lines starting with ``#`` are ignored."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        lines = [line.strip() for line in f]
    return [os.path.join(base, line) for line in lines if line and not line.startswith("#")]


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], extensions: Iterable[str]) -> list[str]:
    """The files `inputs` names, in the order given: a folder gives its files with `extensions`
    (recursive, natural order), a glob its matches with those extensions (sorted), a ``.txt`` file the
    paths it lists (one per line, relative to the list's folder, ``#`` lines ignored), anything else
    itself — a missing file stays in the list, so the builder reading it records it as skipped."""
    wanted = tuple(ext.lower() for ext in extensions)
    files: list[str] = []
    for entry in split_path_list(inputs):
        entry = os.path.expanduser(entry)
        if os.path.isdir(entry):
            files += list_files(entry, wanted)
        elif entry.endswith(".txt") and os.path.isfile(entry):
            files += read_file_list(entry)
        elif glob.has_magic(entry):
            files += sorted(p for p in glob.glob(entry, recursive=True) if p.lower().endswith(wanted))
        else:
            files.append(entry)
    return files

"""Small real inputs for the data-pipeline tests, written into tmp_path (helpers and fixtures).

Images carry a *marker*: a uniform block whose gray level encodes an integer (frame index, stem
number), so a test can read back which file an image in a sentence came from and check order and
pairing. The rest of each image is a piece of a real photograph (scikit-image's astronaut), so the
files are ordinary photographic PNGs, not flat colours.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np
import pytest
import skimage.data
from PIL import Image

SIZE = 32  # every test image is SIZE×SIZE, and builders read at SIZE, so pixels come back exact
MARK = slice(0, 16)  # the marker block: top-left 16×16 (a quarter of the image)
STEP = 10  # marker value v is drawn as gray level 5 + STEP·v (v < 25)


def marker_level(value: int) -> int:
    assert 0 <= value < 25, value
    return 5 + STEP * value


def read_marker(image: np.ndarray) -> int:
    """The integer a marked image carries (robust to small codec errors: median of the block's core)."""
    level = float(np.median(image[4:12, 4:12]))
    return int(round((level - 5) / STEP))


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """The astronaut photograph, 128×128 HWC uint8."""
    return np.asarray(Image.fromarray(skimage.data.astronaut()).resize((128, 128)))


@pytest.fixture(scope="session")
def marked_image(photo: np.ndarray) -> Callable[[int], np.ndarray]:
    """value → a SIZE×SIZE crop of the photo (the crop also depends on value) with the marker block."""

    def make(value: int) -> np.ndarray:
        top, left = (value * 7) % 96, (value * 13) % 96
        image = photo[top : top + SIZE, left : left + SIZE].copy()
        image[MARK, MARK] = marker_level(value)
        return image

    return make


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_truncated_png(path: Path, image: np.ndarray) -> Path:
    """A PNG cut off in the middle of its pixel data (header intact, so it opens but cannot decode)."""
    write_png(path, image)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_random_bytes(path: Path, n_bytes: int = 4096, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(n_bytes))
    return path


def write_marked_video(path: Path, n_frames: int, codec: str = "mpeg4", first: int = 0) -> Path:
    """A video whose frame t is uniformly gray at marker_level(first + t), written with PyAV directly
    (independently of data_pipelines.synthetic). Uniform frames survive lossy coding within ±2."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for t in range(n_frames):
            frame = np.full((SIZE, SIZE, 3), marker_level(first + t), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def markers(images: Sequence[np.ndarray]) -> list[int]:
    return [read_marker(image) for image in images]


@pytest.fixture
def frame_folder(tmp_path: Path, marked_image) -> Callable[..., Path]:
    """(name, n_frames, zero_pad=True) → a folder of frame_<t>.png whose marker is t."""

    def make(name: str, n_frames: int, zero_pad: bool = True) -> Path:
        folder = tmp_path / name
        for t in range(n_frames):
            write_png(folder / (f"frame_{t:03d}.png" if zero_pad else f"frame_{t}.png"), marked_image(t))
        return folder

    return make


def stems_dir(root: Path, stems: Sequence[int], image_of: Callable[[int], np.ndarray], ext: str = "png") -> Path:
    for stem in stems:
        write_png(root / f"item_{stem:02d}.{ext}", image_of(stem))
    return root


def relpaths(paths: Sequence[str], root: str | os.PathLike) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


# A corpus small enough to make in about a second, with every kind represented in both splits.
SMALL_CORPUS = dict(
    n_videos=3,
    n_val_videos=2,
    n_frames=10,
    size=32,
    n_images=8,
    n_val_images=4,
    n_sequences=2,
    n_val_sequences=1,
    n_sequence_frames=9,
    seed=0,
)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> dict:
    """`make_demo_corpus` at SMALL_CORPUS, made once per session (tests must not modify it)."""
    from data_pipelines.synthetic import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("corpus") / "demo", **SMALL_CORPUS)

"""The demo corpus, written as real files so every builder runs on it exactly as on real data:

- videos of coloured circles and squares moving at constant velocity and bouncing off the walls,
  on a plain or gradient background (encoded with PyAV);
- folders of ordered PNG frames of the same kind of scene (for the image-sequence builder);
- still images: random crops of scikit-image's bundled sample photographs (no download);
- paired annotations of those stills: ``edges/`` (soft edge strength, white on black) and ``gray/``,
  matched by stem with ``images/``.

Everything is split into ``train/`` and ``val/``: held-out scenes are separate renders, and
held-out crops come from a strip of each photograph (its right quarter) that train crops never
touch. The layout is recorded in ``corpus.json`` (paths relative to the corpus folder).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

import av
import numpy as np
import scipy.ndimage
import skimage.data
import skimage.filters
from PIL import Image

from data_pipelines.colorization import to_grayscale_rgb
from lvm.core.atomic_files import write_json_atomic

CORPUS_FILE = "corpus.json"
CORPUS_VERSION = 2  # 2: soft edge maps (`edge_map_rgb`) instead of 1-px Canny lines
SPLITS = ("train", "val")

# Colour photographs bundled in the scikit-image wheel (pooch is never asked to download).
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel")
VAL_STRIP = 0.25  # right-hand fraction of each photograph reserved for held-out crops

SHAPE_COLOURS = np.array(
    [
        (230, 40, 40),
        (40, 200, 60),
        (50, 80, 230),
        (240, 220, 40),
        (40, 210, 220),
        (220, 60, 210),
        (250, 140, 30),
        (245, 245, 245),
    ],
    dtype=np.float64,
)

CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska"}


# --- writing files atomically --------------------------------------------------------------------


def pick_video_codec() -> str:
    """libx264 (H.264, what real corpora mostly hold) when this FFmpeg build can encode it, else
    mpeg4 (MPEG-4 part 2, built into every FFmpeg, PyAV's wheels included)."""
    for name in ("libx264", "mpeg4"):
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # av raises its own UnknownCodecError subclasses, which vary by version
            continue
    raise RuntimeError("this PyAV build can encode neither libx264 nor mpeg4")


def write_video_file(
    path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 8, codec: str | None = None
) -> str:
    """Encode HWC uint8 RGB frames (even width and height, for yuv420p) into a video file, written
    under a temporary name and renamed into place. Returns the path."""
    path = str(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sizes, got {width}×{height}")
    container_format = CONTAINER_FORMATS.get(os.path.splitext(path)[1].lower())
    if container_format is None:
        raise ValueError(f"{path}: unknown video suffix (known: {sorted(CONTAINER_FORMATS)})")
    codec = codec or pick_video_codec()
    tmp = path + ".tmp"
    try:
        with av.open(tmp, "w", format=container_format) as container:
            # A fixed quantiser, not a bit rate: x264's rate control made different files from the same frames
            # in different runs (decoded up to 4 levels apart), and with them every figure of a seeded demo
            # run. Quantiser 4 at these sizes loses nothing that the yuv420p conversion keeps (29.9 dB on the
            # demo's frames, as with lossless coding), so markers survive encoding; mpeg4's rate control is
            # deterministic and gets a generous bit rate.
            options = {"qp": "4"} if codec == "libx264" else None
            stream = container.add_stream(codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec != "libx264":
                stream.bit_rate = 4_000_000
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():  # flush the encoder's delayed frames
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_png(path: str | os.PathLike, image: np.ndarray) -> str:
    """Write an HWC uint8 image as PNG via a temporary name; returns the path."""
    path = str(path)
    tmp = path + ".tmp"
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# --- content -------------------------------------------------------------------------------------


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A muted plain colour, or a linear gradient between two in a random direction (HWC float)."""
    first = rng.uniform(20, 140, 3)
    if rng.random() < 0.5:
        return np.broadcast_to(first, (size, size, 3)).copy()
    second = rng.uniform(20, 140, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    along = np.cos(angle) * xx + np.sin(angle) * yy
    along = (along - along.min()) / max(np.ptp(along), 1e-9)
    return first + along[..., None] * (second - first)


def moving_shapes_frames(n_frames: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames (HWC uint8 RGB) of 2–4 circles/squares of distinct colours moving at constant velocity
    and bouncing off the walls (reflected at the border, velocity component flipped)."""
    n_shapes = int(rng.integers(2, 5))
    colours = SHAPE_COLOURS[rng.choice(len(SHAPE_COLOURS), n_shapes, replace=False)]
    square = rng.random(n_shapes) < 0.5
    radius = rng.uniform(0.08, 0.16, n_shapes) * size
    lo, hi = radius, size - 1 - radius
    position = rng.uniform(lo[:, None], hi[:, None], (n_shapes, 2))  # (x, y) per shape
    speed = rng.uniform(0.025, 0.06, n_shapes) * size  # ≥ 1.6 px/frame at 64 px: visible motion
    angle = rng.uniform(0, 2 * np.pi, n_shapes)
    velocity = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]
    backdrop = background(size, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = []
    for _ in range(n_frames):
        canvas = backdrop.copy()
        for k in range(n_shapes):
            dx, dy = xx - position[k, 0], yy - position[k, 1]
            if square[k]:
                mask = (np.abs(dx) <= radius[k]) & (np.abs(dy) <= radius[k])
            else:
                mask = dx * dx + dy * dy <= radius[k] ** 2
            canvas[mask] = colours[k]
        frames.append(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
        position += velocity
        for axis in range(2):
            below = position[:, axis] < lo
            above = position[:, axis] > hi
            position[below, axis] = 2 * lo[below] - position[below, axis]
            position[above, axis] = 2 * hi[above] - position[above, axis]
            velocity[below | above, axis] *= -1
    return frames


def load_sample_image(name: str) -> np.ndarray:
    """A photograph bundled with scikit-image as HWC uint8 RGB (gray ones replicated to 3 channels)."""
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def random_crop(photo: np.ndarray, split: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop resized to ``size``×``size``: train crops lie in the left
    (1 − VAL_STRIP) of the photograph, val crops in the right VAL_STRIP, so they never overlap."""
    height, width = photo.shape[:2]
    boundary = int(round(width * (1 - VAL_STRIP)))
    x0, x1 = (0, boundary) if split == "train" else (boundary, width)
    largest = min(height, x1 - x0, 320)
    side = int(rng.integers(max(min(size, largest), largest // 3), largest + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(x0, x1 - side + 1))
    crop = photo[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size)))


def edge_map_rgb(image: np.ndarray, sigma: float = 1.5, gain: float = 6.0) -> np.ndarray:
    """Soft edge map, white on black, as HWC uint8 RGB: the Sobel gradient magnitude of the image's
    luminance after a Gaussian blur of `sigma` px, times `gain`, clipped to 1.

    Soft, few-pixel-wide edges like HED's rather than 1-px Canny lines: at 64 px a tokenizer with one
    code per 8×8 patch cannot place 1-px lines (its round trip of Canny maps is 1.8 dB above all-black),
    while it carries these at 22.9 dB (README, "The edges analogy")."""
    luminance = to_grayscale_rgb(image)[..., 0].astype(np.float64) / 255.0
    strength = skimage.filters.sobel(scipy.ndimage.gaussian_filter(luminance, sigma)) * gain
    return np.repeat((strength.clip(0.0, 1.0) * 255).round().astype(np.uint8)[..., None], 3, axis=2)


# --- the corpus ----------------------------------------------------------------------------------


def make_demo_corpus(
    out_dir: str | os.PathLike,
    n_videos: int = 48,
    n_val_videos: int = 8,
    n_frames: int = 16,
    size: int = 64,
    fps: int = 8,
    n_images: int = 200,
    n_val_images: int = 40,
    n_sequences: int = 8,
    n_val_sequences: int = 2,
    n_sequence_frames: int = 24,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write the demo corpus under `out_dir` and return its layout (absolute paths; see
    `load_demo_corpus`): ``{"params", "codec", "root", "train": {...}, "val": {...}}`` where each
    split holds ``videos`` (mp4 files of `n_frames` frames), ``sequences`` (folders of
    `n_sequence_frames` PNGs), ``images``/``edges``/``gray`` (same-stem PNG lists) and their
    ``*_dir`` folders. All images are ``size``×``size``.

    Deterministic given the arguments: every item draws from its own generator seeded by
    (seed, kind, split, index). When `out_dir` already holds a corpus made with the same arguments
    it is reused unless ``overwrite``; a different one is replaced. A non-empty folder without
    ``corpus.json`` is refused rather than written into. The defaults take a few seconds on 2 cores.
    """
    params = dict(
        n_videos=n_videos,
        n_val_videos=n_val_videos,
        n_frames=n_frames,
        size=size,
        fps=fps,
        n_images=n_images,
        n_val_images=n_val_images,
        n_sequences=n_sequences,
        n_val_sequences=n_val_sequences,
        n_sequence_frames=n_sequence_frames,
        seed=seed,
    )
    for name in ("n_frames", "n_sequence_frames", "fps"):
        if params[name] < 1:
            raise ValueError(f"{name} must be ≥ 1, got {params[name]}")
    for name in ("n_videos", "n_val_videos", "n_images", "n_val_images", "n_sequences", "n_val_sequences"):
        if params[name] < 0:
            raise ValueError(f"{name} must be ≥ 0, got {params[name]}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be even and ≥ 16 (yuv420p video), got {size}")
    out_dir = os.path.abspath(out_dir)
    corpus_path = os.path.join(out_dir, CORPUS_FILE)
    if os.path.exists(corpus_path):
        with open(corpus_path) as f:
            existing = json.load(f)
        if not overwrite and existing.get("params") == params and existing.get("version") == CORPUS_VERSION:
            return load_demo_corpus(out_dir)
        os.remove(corpus_path)  # first, so an interrupted rewrite never looks complete
        for split in SPLITS:
            shutil.rmtree(os.path.join(out_dir, split), ignore_errors=True)
    elif os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir}: not empty and holds no {CORPUS_FILE}; pick an empty folder")

    codec = pick_video_codec()
    photos = [load_sample_image(name) for name in SAMPLE_IMAGES]
    counts = {"train": (n_videos, n_sequences, n_images), "val": (n_val_videos, n_val_sequences, n_val_images)}
    layout: dict = {"version": CORPUS_VERSION, "params": params, "codec": codec, "sample_images": list(SAMPLE_IMAGES)}
    for split_id, split in enumerate(SPLITS):
        n_split_videos, n_split_sequences, n_split_images = counts[split]
        dirs = {kind: os.path.join(split, kind) for kind in ("videos", "sequences", "images", "edges", "gray")}
        for rel in dirs.values():
            os.makedirs(os.path.join(out_dir, rel), exist_ok=True)
        entry: dict = {f"{kind}_dir": rel for kind, rel in dirs.items()}
        entry.update(videos=[], sequences=[], images=[], edges=[], gray=[])

        for i in range(n_split_videos):
            rng = np.random.default_rng([seed, 0, split_id, i])
            rel = os.path.join(dirs["videos"], f"video_{i:04d}.mp4")
            write_video_file(os.path.join(out_dir, rel), moving_shapes_frames(n_frames, size, rng), fps, codec)
            entry["videos"].append(rel)

        for i in range(n_split_sequences):
            rng = np.random.default_rng([seed, 1, split_id, i])
            folder = os.path.join(dirs["sequences"], f"sequence_{i:03d}")
            os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
            for t, frame in enumerate(moving_shapes_frames(n_sequence_frames, size, rng)):
                write_png(os.path.join(out_dir, folder, f"frame_{t:04d}.png"), frame)
            entry["sequences"].append(folder)

        for i in range(n_split_images):
            rng = np.random.default_rng([seed, 2, split_id, i])
            crop = random_crop(photos[i % len(photos)], split, size, rng)
            name = f"crop_{i:04d}.png"
            for kind, image in (("images", crop), ("edges", edge_map_rgb(crop)), ("gray", to_grayscale_rgb(crop))):
                rel = os.path.join(dirs[kind], name)
                write_png(os.path.join(out_dir, rel), image)
                entry[kind].append(rel)
        layout[split] = entry

    write_json_atomic(corpus_path, layout)  # last: its presence means the corpus is complete
    return load_demo_corpus(out_dir)


def load_demo_corpus(out_dir: str | os.PathLike) -> dict:
    """``corpus.json`` with every relative path made absolute; adds ``root`` and ``corpus_json``."""
    out_dir = os.path.abspath(out_dir)
    corpus_path = os.path.join(out_dir, CORPUS_FILE)
    with open(corpus_path) as f:
        layout = json.load(f)
    for split in SPLITS:
        for key, value in layout[split].items():
            if isinstance(value, list):
                layout[split][key] = [os.path.join(out_dir, rel) for rel in value]
            else:
                layout[split][key] = os.path.join(out_dir, value)
    layout["root"] = out_dir
    layout["corpus_json"] = corpus_path
    return layout

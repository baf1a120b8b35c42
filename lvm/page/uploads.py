"""Uploaded files, checked before any pixel is decoded (size on disk, pixel count), then read as the
original reads images (PIL) and videos (PyAV + OpenCV)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lvm.media.images import pil_to_tensor
from lvm.media.skips import BadInputError
from lvm.media.video import read_video_frames


class UploadError(ValueError):
    """A request the page refuses (a file over a limit, not an image, a missing field); shown to the user."""


@dataclass(frozen=True)
class UploadLimits:
    """What one uploaded file may be: at most `max_upload_mb` MB (MiB, as Gradio counts them) on disk and
    `max_pixels` pixels (per frame, for videos)."""

    max_upload_mb: float = 20.0
    max_pixels: int = 4096 * 4096

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024**2)


def _name(path: str | os.PathLike) -> str:
    return Path(path).name


def check_upload_size(path: str | os.PathLike, limits: UploadLimits) -> None:
    """UploadError naming the file when it is larger than `limits.max_upload_mb`."""
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise UploadError(
            f"{_name(path)}: {size / 1024**2:.3g} MB is over the upload limit of {limits.max_upload_mb:g} MB"
        )


def check_pixels(path: str | os.PathLike, width: int, height: int, limits: UploadLimits) -> None:
    """UploadError naming the file when width × height is over `limits.max_pixels`."""
    if width * height > limits.max_pixels:
        raise UploadError(
            f"{_name(path)}: {width}×{height} = {width * height:,} pixels is over the limit of "
            f"{limits.max_pixels:,} pixels"
        )


def read_upload_image(path: str | os.PathLike, size: int, limits: UploadLimits) -> torch.Tensor:
    """An uploaded image → (3, size, size) float32 in [0, 1], prepared as the original prepares images
    (lvm.media.images). Size and pixel count are checked before any pixel is decoded."""
    check_upload_size(path, limits)
    try:
        with Image.open(path) as image:  # reads the header only
            check_pixels(path, image.width, image.height, limits)
            image.load()
            return pil_to_tensor(image, size=size)
    except UploadError:
        raise
    except Image.DecompressionBombError as err:  # PIL's own cap, met before ours when the header is huge
        raise UploadError(f"{_name(path)}: over the limit of {limits.max_pixels:,} pixels ({err})") from err
    except UnidentifiedImageError as err:
        raise UploadError(
            f"{_name(path)}: not an image (PIL cannot identify it); upload a PNG, JPEG, WebP, BMP or TIFF file"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        raise UploadError(f"{_name(path)}: cannot read this image ({err})") from err


def read_upload_video(path: str | os.PathLike, size: int, limits: UploadLimits) -> list[np.ndarray]:
    """An uploaded video → its frames as (size, size, 3) uint8, read as the data pipelines read videos.
    Size and frame dimensions are checked before any frame is decoded."""
    check_upload_size(path, limits)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UploadError(f"{_name(path)}: no video stream in this file")
            codec = container.streams.video[0].codec_context
            check_pixels(path, codec.width, codec.height, limits)
    except UploadError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise UploadError(f"{_name(path)}: not a video PyAV can open ({err})") from err
    try:
        return read_video_frames(path, size)
    except BadInputError as err:
        raise UploadError(f"{_name(path)}: {err.reason}") from err

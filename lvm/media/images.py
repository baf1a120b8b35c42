"""Image file → [0, 1] float tensor exactly as the original LVM scripts prepare VQGAN input.

PIL open → convert("RGB") → optional centre crop (a fraction of each side) → resize to
size×size WITHOUT keeping the aspect ratio, with PIL's default filter → /255 as float32.
No normalisation to [-1, 1]. Tensors are CHW; arrays are HWC uint8.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lvm.media.skips import BadInputError, SkipCounter, skip_or_raise


class ImageReadError(ValueError):
    """An image file that PIL cannot open or decode."""


def _center_crop(image: Image.Image, fraction: float) -> Image.Image:
    """Keep the central `fraction` of the width and of the height."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"center_crop must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return image
    width, height = image.size
    left = int(round((1.0 - fraction) * width / 2))
    top = int(round((1.0 - fraction) * height / 2))
    right = max(left + 1, int(round((1.0 + fraction) * width / 2)))
    bottom = max(top + 1, int(round((1.0 + fraction) * height / 2)))
    return image.crop((left, top, right, bottom))


def pil_to_array(image: Image.Image, size: int | None = 256, center_crop: float | None = None) -> np.ndarray:
    """PIL image → (size, size, 3) uint8 RGB; `size=None` keeps the image's own size."""
    image = image.convert("RGB")
    if center_crop is not None:
        image = _center_crop(image, center_crop)
    if size is not None and image.size != (size, size):
        # No `resample=` on purpose: the original relies on PIL's default filter.
        image = image.resize((size, size))
    return np.asarray(image, dtype=np.uint8)


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float32 in [0, 1], the division the original does (x / 255)."""
    return torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def pil_to_tensor(image: Image.Image, size: int | None = 256, center_crop: float | None = None) -> torch.Tensor:
    """PIL image → (3, size, size) float32 in [0, 1]; `size=None` keeps the image's own size."""
    return uint8_to_tensor(pil_to_array(image, size=size, center_crop=center_crop))


def array_to_tensor(array: np.ndarray, size: int | None = 256, center_crop: float | None = None) -> torch.Tensor:
    """HWC (or HW gray) uint8 array → (3, size, size) float32 in [0, 1], through PIL as files are."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"array_to_tensor expects uint8 pixels, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"array_to_tensor expects an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {array.shape}")
    return pil_to_tensor(Image.fromarray(array), size=size, center_crop=center_crop)


def read_image_array(path: str | Path, size: int = 256, center_crop: float | None = None) -> np.ndarray:
    """Image file → (size, size, 3) uint8 RGB, prepared as the original prepares it. Unreadable
    files raise ImageReadError (a ValueError) naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here with its name attached
            return pil_to_array(image, size=size, center_crop=center_crop)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        # PIL reports truncated/corrupt data as OSError and some malformed headers as SyntaxError.
        raise ImageReadError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def load_image(path: str | Path, size: int = 256, center_crop: float | None = None) -> torch.Tensor:
    """Image file → (3, size, size) float32 in [0, 1]. Unreadable files raise ImageReadError (a
    ValueError) naming the file."""
    return uint8_to_tensor(read_image_array(path, size=size, center_crop=center_crop))


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float image (values clamped to [0, 1]) → (H, W, 3) uint8 array, rounded.
    A (B, 3, H, W) batch gives (B, H, W, 3)."""
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"tensor_to_uint8 expects (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}")
    pixels = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return pixels.movedim(-3, -1).cpu().numpy()


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


def image_loader(size: int | None, skips: SkipCounter, strict: bool) -> Callable[[str], np.ndarray | None]:
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


def images_to_tensor(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """HWC uint8 images of one size (a list, or an (N, H, W, 3) array) → (N, 3, H, W) float32 in [0, 1] (the
    tokenizer's input)."""
    batch = np.ascontiguousarray(images) if isinstance(images, np.ndarray) else np.stack(images)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)

"""A visual sentence as one picture: its tokens split per image, checked against the VQGAN, decoded,
laid out in a grid and saved as a PNG (the original's detokenization inspection tool, the original's DATASET.md and
tokenize_examples/).

    sentence_codes(tokens (n_images·t,) ints, n_images, config, where) → codes (n_images, t) int64
    image_grid(images (N, 3, H, W) float [0, 1], columns)              → (rows·(H+p)+p, cols·(W+p)+p, 3) uint8
    save_png(grid, path)                                                → path, written atomically

The grid layout is torchvision's `make_grid`'s (row-major tiles, `padding` pixels around and between
them, at most `columns` per row); it is done with numpy so no torchvision build is needed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import lvm.tokenizer
from lvm.media.images import tensor_to_uint8
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel

MAX_DEFAULT_COLUMNS = 8


def sentence_codes(tokens: np.ndarray, n_images: int, config: VQGANConfig, where: str) -> torch.Tensor:
    """A sentence's 1-D tokens → (n_images, tokens_per_image) int64 codes the VQGAN can decode.

    Raises ValueError, prefixed by `where` (e.g. "<shard>: sample <key>"), when the sentence's images
    are not the tokenizer's size or when an id is not a codebook entry (ids ≥ num_embeddings are the
    LM's special tokens, the original's EasyLM/models/llama/llama_model.py, never image codes).
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or n_images < 1 or len(tokens) % n_images:
        raise ValueError(f"{where}: {len(tokens)} tokens do not split into {n_images} images")
    per_image = len(tokens) // n_images
    if per_image != config.tokens_per_image:
        raise ValueError(
            f"{where}: the sentence has {per_image} tokens per image ({n_images} images) but the "
            f"VQGAN makes {config.tokens_per_image} tokens per image"
        )
    codes = torch.from_numpy(tokens.astype(np.int64)).reshape(n_images, per_image)
    bad = codes >= config.num_embeddings
    if bad.any():
        position = int(bad.flatten().nonzero()[0])
        raise ValueError(
            f"{where}: token {position} (image {position // per_image}) is id "
            f"{int(codes.flatten()[position])} ≥ num_embeddings {config.num_embeddings}: a special "
            f"token, not an image code"
        )
    return codes


def default_columns(n_images: int) -> int:
    """The sentence's own layout: all its images in one row, wrapped after 8."""
    return min(n_images, MAX_DEFAULT_COLUMNS)


def tile_images(images: torch.Tensor, columns: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Images (N, C, H, W) → one (C, H', W') tensor of the same dtype: row-major tiles, at most
    `columns` per row, `padding` pixels of `pad_value` around every tile; values copied exactly."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"tile_images expects images (N ≥ 1, C, H, W), got shape {tuple(images.shape)}")
    if columns < 1:
        raise ValueError(f"image_grid: columns must be ≥ 1, got {columns}")
    if padding < 0:
        raise ValueError(f"image_grid: padding must be ≥ 0, got {padding}")
    n, channels, height, width = images.shape
    columns = min(columns, n)  # as make_grid: a short sentence is not padded with empty tiles
    rows = math.ceil(n / columns)
    grid = images.new_full(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding), pad_value
    )
    for i, tile in enumerate(images):
        row, column = divmod(i, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[:, top : top + height, left : left + width] = tile
    return grid


def image_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Images (N, 3, H, W) float in [0, 1] → one (H', W', 3) uint8 picture, `columns` per row
    (default `default_columns(N)`), row-major, `padding` pixels of `pad_value` around every tile."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"image_grid expects images (N ≥ 1, 3, H, W), got shape {tuple(images.shape)}")
    columns = default_columns(images.shape[0]) if columns is None else int(columns)
    # Clamped first, so the padding (pad_value / 255 → pad_value after rounding) is the only value
    # the tiles did not hold; tensor_to_uint8 then rounds tiles and padding alike.
    tiles = images.detach().float().clamp(0.0, 1.0)
    return tensor_to_uint8(tile_images(tiles, columns, padding, pad_value / 255.0))


def tile_box(
    index: int, n_images: int, tile_size: tuple[int, int], columns: int | None = None, padding: int = 2
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pixel box of image `index` in the grid `image_grid` draws."""
    columns = min(default_columns(n_images) if columns is None else columns, n_images)
    height, width = tile_size
    row, column = divmod(index, columns)
    top, left = padding + row * (height + padding), padding + column * (width + padding)
    return top, left, top + height, left + width


def sentence_grid(
    model: VQGANModel,
    tokens: np.ndarray,
    n_images: int,
    where: str,
    columns: int | None = None,
    padding: int = 2,
    batch_size: int = 64,
) -> np.ndarray:
    """Check, decode (in batches of `batch_size` images) and lay out one sentence: (H', W', 3) uint8."""
    codes = sentence_codes(tokens, n_images, model.config, where)
    images = lvm.tokenizer.decode(model, codes, batch_size=batch_size)
    return image_grid(images, columns=columns, padding=padding)


def save_png(grid: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG: to `<path>.tmp`, then renamed over `path`, so a
    reader never sees half a file. Creates the folder; returns the path."""
    path = Path(path)
    if grid.dtype != np.uint8 or grid.ndim != 3 or grid.shape[2] != 3:
        raise ValueError(f"save_png({path}) expects an (H, W, 3) uint8 array, got {grid.dtype} {grid.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        Image.fromarray(grid).save(tmp, format="PNG")  # explicit format: the .tmp suffix names none
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

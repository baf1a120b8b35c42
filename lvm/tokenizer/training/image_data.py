"""Image files for tokenizer training: a folder (searched recursively) or a text file listing images.

`list_image_files(source)` → the paths; `ImageFileDataset` reads each with
`lvm.media.images.load_image` (resized to the VQGAN's resolution, [0, 1] CHW) and flips it
left-right at random; `ImageFolderDataModule` splits off a validation set and builds the loaders.

Unreadable files are reported by name, counted and skipped, or with `strict=True` raised as an
error naming the file. At `setup` every file's header is opened (cheap: no decoding), so
non-images, empty files and missing list entries are counted before training starts; a file
whose header reads but whose pixels do not decode (truncated) is found when it is loaded — then
a warning names it and the next file takes its place (strict: the error is raised).
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lvm.media.files import IMAGE_EXTENSIONS, list_files, read_file_list
from lvm.media.images import ImageReadError, load_image
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning

log = logging.getLogger(__name__)


def list_image_files(source: str | os.PathLike) -> list[Path]:
    """Image paths of `source`: a folder (recursive, by extension, natural order) or a text file
    with one path per line (relative paths are relative to the list's folder; blank lines and
    lines starting with # are ignored)."""
    source = Path(source)
    if source.is_dir():
        return [Path(p) for p in list_files(source, IMAGE_EXTENSIONS, recursive=True)]
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such folder or image list")
    return [Path(p) for p in read_file_list(source)]


def check_image_headers(paths: list[Path], skips: SkipCounter, strict: bool = False) -> list[Path]:
    """The paths whose image header PIL can read; the others are recorded in `skips` (a warning
    names each) or, when `strict`, raised as BadInputError naming the file."""
    readable = []
    for path in paths:
        skips.saw()
        try:
            with Image.open(path):
                pass
        except FileNotFoundError:
            reason = "file not found"
        except (Image.UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
            reason = f"not a readable image ({type(error).__name__})"
        else:
            readable.append(path)
            continue
        if strict:
            raise BadInputError(path, reason)
        skips.skip(path, reason)
    return readable


class ImageFileDataset(Dataset):
    """Image files → (3, resolution, resolution) float32 in [0, 1], mirrored left-right with
    probability ½ when `flip`. A file that fails to decode is skipped with a warning (its
    neighbour is returned instead) unless `strict`."""

    def __init__(self, paths: list[Path], resolution: int, flip: bool = False, strict: bool = False) -> None:
        if not paths:
            raise ValueError("ImageFileDataset: no images")
        self.paths = list(paths)
        self.resolution = resolution
        self.flip = flip
        self.strict = strict
        self._bad: set[int] = set()  # per worker process: a file that failed once is not retried

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if i in self._bad:
                continue
            try:
                image = load_image(self.paths[i], size=self.resolution)
            except ImageReadError as error:
                if self.strict:
                    raise
                self._bad.add(i)
                warnings.warn(f"{error}; skipped", SkippedInputWarning, stacklevel=2)  # the message names the file
                continue
            if self.flip and torch.rand(()) < 0.5:
                image = image.flip(-1)
            return image
        raise RuntimeError(f"ImageFileDataset: none of the {len(self.paths)} images could be read")


class ImageFolderDataModule(pl.LightningDataModule):
    """Training and validation images for the tokenizer.

    `source` is a folder or an image list (see `list_image_files`). The validation images come
    from `val_source` or, when it is None, a seeded random `val_fraction` of `source` (at least
    one image). Training batches are shuffled, randomly flipped (`flip`) and of full size; the
    loaders use `num_workers` worker processes. `skips` records every unreadable file found at
    setup; `strict=True` turns the first one into a BadInputError naming it.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        resolution: int,
        val_source: str | os.PathLike | None = None,
        val_fraction: float = 0.05,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        flip: bool = True,
        strict: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"data.batch_size must be >= 1 and data.num_workers >= 0, got {batch_size}, {num_workers}")
        self.source, self.val_source = source, val_source
        self.resolution = int(resolution)
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.flip, self.strict, self.seed = flip, strict, seed
        self.skips = SkipCounter()
        self.train_files: list[Path] = []
        self.val_files: list[Path] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_files:
            return  # fit then validate: the split is made once
        self.skips = SkipCounter()
        files = check_image_headers(list_image_files(self.source), self.skips, self.strict)
        if self.val_source is not None:
            train, val = files, check_image_headers(list_image_files(self.val_source), self.skips, self.strict)
        else:
            if len(files) < 2:
                raise ValueError(
                    f"{self.source}: {len(files)} readable image(s); need at least 2 to hold out "
                    f"validation images (or set data.val_source)"
                )
            order = list(range(len(files)))
            random.Random(self.seed).shuffle(order)
            n_val = min(len(files) - 1, max(1, round(self.val_fraction * len(files))))
            val = [files[i] for i in sorted(order[:n_val])]
            train = [files[i] for i in sorted(order[n_val:])]
        if len(train) < self.batch_size:
            raise ValueError(
                f"{self.source}: {len(train)} training images, fewer than data.batch_size "
                f"{self.batch_size} (training batches are always full)"
            )
        if not val:
            raise ValueError(f"{self.val_source}: no readable validation images")
        self.train_files, self.val_files = train, val
        log.info("tokenizer data: %d training, %d validation images; %s", len(train), len(val), self.skips.summary())

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            ImageFileDataset(self.train_files, self.resolution, flip=self.flip, strict=self.strict),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            ImageFileDataset(self.val_files, self.resolution, strict=self.strict),
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

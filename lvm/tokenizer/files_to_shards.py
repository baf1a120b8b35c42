"""Image and video files → VQGAN codes → resumable WebDataset shards (what `python -m lvm.tokenize` runs):
shard i holds files [i·n, (i+1)·n) of the sorted list, is written under a temporary name and renamed when
whole, and is skipped by a rerun once its summary is in `progress/`; files are read in DataLoader workers,
the encoder runs under inference_mode, channels-last, with bf16 autocast on GPUs."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import DataLoader, Dataset

from lvm.core.atomic_files import write_json_atomic
from lvm.core.progress import ImagesPerSecond
from lvm.data.manifest import PROGRESS_DIR, manifest_dict, write_manifest
from lvm.data.shards import VisualSentence, write_shard_file
from lvm.media.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, expand_inputs
from lvm.media.images import ImageReadError, read_image_array
from lvm.media.skips import BadInputError
from lvm.media.video import read_video_frames
from lvm.tokenizer.codec import encode_images
from lvm.tokenizer.vqgan import VQGANModel

# --- which files ----------------------------------------------------------------------------------


def list_inputs(inputs: str | Sequence[str]) -> list[str]:
    """Image and video paths from folders (searched recursively), globs, single files, and `.txt`
    file lists (one path per line, relative to the list's folder; `#` lines ignored). Absolute,
    de-duplicated and sorted, so every rank and every restart sees the same order."""
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    for entry in map(str, inputs):
        if not (os.path.exists(os.path.expanduser(entry)) or glob.has_magic(entry)):
            raise FileNotFoundError(f"inputs: {entry} is not a folder, a .txt file list, a glob or a file")
    media = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    found = expand_inputs(inputs, media)
    if not found:
        raise FileNotFoundError(
            f"inputs: no image or video files in {list(map(str, inputs))} (extensions {', '.join(media)})"
        )
    return sorted({os.path.abspath(p) for p in found})


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class ShardPlan:
    """Shard `index` (named `name`) holds the files `files`, whose global indices start at `first`."""

    index: int
    name: str
    first: int
    files: list[str]


def plan_shards(files: Sequence[str], files_per_shard: int, prefix: str = "shard") -> list[ShardPlan]:
    """Consecutive runs of `files_per_shard` files, one per shard."""
    if files_per_shard < 1:
        raise ValueError(f"files_per_shard must be >= 1, got {files_per_shard}")
    return [
        ShardPlan(i, f"{prefix}-{i:06d}.tar", start, list(files[start : start + files_per_shard]))
        for i, start in enumerate(range(0, len(files), files_per_shard))
    ]


def file_plan(files: Sequence[str], files_per_shard: int, tokenizer: dict) -> dict[str, Any]:
    """What the shards of this job follow from: the file list, the shard size and the tokenizer."""
    return {
        "files": len(files),
        "files_sha256": hashlib.sha256("\n".join(files).encode()).hexdigest(),
        "files_per_shard": files_per_shard,
        "tokenizer": tokenizer,
    }


def shard_is_done(out_dir: Path, shard: ShardPlan) -> bool:
    """Its summary exists and so does its tar, unless the summary says every file was skipped."""
    summary = out_dir / PROGRESS_DIR / f"{shard.name}.json"
    if not summary.is_file():
        return False
    return (out_dir / shard.name).is_file() or json.loads(summary.read_text())["samples"] == 0


class MediaFiles(Dataset):
    """Item i: {"index", "path", "frames": (n, 3, R, R) uint8 or None, "error": reason or None}."""

    def __init__(
        self,
        files: Sequence[str],
        first_index: Sequence[int],
        resolution: int,
        center_crop: float | None,
        frame_stride: int,
        max_frames: int | None,
    ) -> None:
        self.files, self.first_index = list(files), list(first_index)
        self.resolution, self.center_crop = resolution, center_crop
        self.frame_stride, self.max_frames = frame_stride, max_frames

    def __len__(self) -> int:
        return len(self.files)

    def _frames(self, path: str) -> np.ndarray:
        if is_video(path):
            frames = read_video_frames(path, self.resolution)[:: self.frame_stride][: self.max_frames]
            return np.stack(frames)
        return read_image_array(path, self.resolution, self.center_crop)[None]

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.files[i]
        item = {"index": self.first_index[i], "path": path, "frames": None, "error": None}
        try:
            # A copy: PIL hands out read-only buffers, which torch refuses to share.
            item["frames"] = torch.from_numpy(np.array(self._frames(path))).permute(0, 3, 1, 2)
        except (BadInputError, ImageReadError, FileNotFoundError) as err:
            # The reason without the path in front (the path travels separately).
            item["error"] = str(getattr(err, "reason", None) or err).removeprefix(f"{path}: ")
        return item


def keep_as_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DataLoader collate: items differ in frame count, so they are not stacked."""
    return items


@dataclass
class TokenizeSettings:
    batch_size: int = 64
    num_workers: int = 2
    center_crop: float | None = None
    frame_stride: int = 1
    max_frames: int | None = None
    channels_last: bool = True
    autocast_dtype: torch.dtype | None = None
    strict: bool = False
    progress: bool = True


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _encode_items(
    model: VQGANModel, items: list[dict[str, Any]], device: torch.device, settings: TokenizeSettings
) -> list[np.ndarray]:
    """Codes (n_frames · tokens_per_image,) uint16 of each decoded item, in order."""
    frames = torch.cat([item["frames"] for item in items])
    # uint8 → [0, 1] on the device: a quarter of the bytes cross to the GPU (x / 255, as the original).
    images = frames.to(device, non_blocking=True).float().div_(255.0)
    codes = (
        encode_images(
            model,
            images,
            batch_size=settings.batch_size,
            channels_last=settings.channels_last,
            autocast_dtype=settings.autocast_dtype,
        )
        .cpu()
        .numpy()
        .astype(np.uint16)
    )
    out, start = [], 0
    for item in items:
        n = item["frames"].shape[0]
        out.append(codes[start : start + n].reshape(-1))
        start += n
    return out


def _sentence_of(item: dict[str, Any], tokens: np.ndarray, root: str) -> VisualSentence:
    n = item["frames"].shape[0]
    kind = "video" if is_video(item["path"]) else "image"
    return VisualSentence(tokens=tokens, kind=kind, source=[os.path.relpath(item["path"], root)], n_images=n)


def tokenize_shards(
    model: VQGANModel,
    shards: list[ShardPlan],
    out_dir: Path,
    root: str,
    device: torch.device,
    settings: TokenizeSettings,
    console: Console | None = None,
) -> dict[str, int]:
    """Decode (workers) → encode → write each shard of `shards`; returns counts of this process."""
    files = [f for shard in shards for f in shard.files]
    first = [shard.first + j for shard in shards for j in range(len(shard.files))]
    dataset = MediaFiles(
        files, first, model.config.resolution, settings.center_crop, settings.frame_stride, settings.max_frames
    )
    # Videos give many frames per file: fewer files per loader batch keeps encode batches near batch_size.
    files_per_batch = settings.batch_size if not any(map(is_video, files)) else max(1, settings.batch_size // 16)
    loader = DataLoader(
        dataset,
        batch_size=files_per_batch,
        collate_fn=keep_as_list,
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if settings.num_workers else None,
    )
    totals = {"files": 0, "images": 0, "samples": 0, "tokens": 0, "skipped": 0, "shards": 0}
    progress = Progress(
        TextColumn("[bold]tokenize"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        ImagesPerSecond(),
        TimeElapsedColumn(),
        console=console,
        disable=not settings.progress,
    )
    pending = iter(shards)
    shard = next(pending, None)
    sentences: list[VisualSentence] = []
    keys: list[str] = []
    skipped: list[dict[str, str]] = []
    seen_in_shard = 0
    with progress:
        task = progress.add_task("tokenize", total=len(files), images=0)
        for items in loader:
            good = [item for item in items if item["error"] is None]
            for item in items:
                if item["error"] is not None:
                    if settings.strict:
                        raise BadInputError(item["path"], item["error"])
                    skipped.append({"path": os.path.relpath(item["path"], root), "reason": item["error"]})
                    progress.console.print(f"[yellow]skipped[/] {item['path']}: {item['error']}")
            codes = _encode_items(model, good, device, settings) if good else []
            by_index = {item["index"]: (item, c) for item, c in zip(good, codes)}
            for item in items:
                if item["index"] in by_index:
                    decoded, tokens = by_index[item["index"]]
                    sentences.append(_sentence_of(decoded, tokens, root))
                    keys.append(f"{item['index']:09d}")
                seen_in_shard += 1
                if seen_in_shard == len(shard.files):  # the shard's last file: write it whole
                    _finish_shard(out_dir, shard, sentences, keys, skipped, model)
                    totals["shards"] += 1
                    totals["samples"] += len(sentences)
                    totals["tokens"] += sum(len(s.tokens) for s in sentences)
                    totals["skipped"] += len(skipped)
                    sentences, keys, skipped, seen_in_shard = [], [], [], 0
                    shard = next(pending, None)
            totals["files"] += len(items)
            totals["images"] += sum(item["frames"].shape[0] for item in good)
            progress.update(task, advance=len(items), images=totals["images"])
    return totals


def _finish_shard(
    out_dir: Path,
    shard: ShardPlan,
    sentences: list[VisualSentence],
    keys: list[str],
    skipped: list[dict[str, str]],
    model: VQGANModel,
) -> None:
    """The shard (atomically), then its summary (atomically): a shard counts as done only once both
    exist, so a crash in between redoes it."""
    config = model.config
    entry = {"samples": 0, "tokens": 0, "kinds": {}}  # every file of the shard skipped: no tar at all
    if sentences:
        entry = write_shard_file(
            out_dir / shard.name,
            sentences,
            keys,
            vocab_size=config.num_embeddings,
            tokens_per_image=config.tokens_per_image,
        )
    summary = {
        "path": shard.name,
        "samples": entry["samples"],
        "tokens": entry["tokens"],
        "kinds": entry["kinds"],
        "files": len(shard.files),
        "skipped": skipped,
    }
    write_json_atomic(out_dir / PROGRESS_DIR / f"{shard.name}.json", summary)


def write_final_manifest(out_dir: Path, shards: list[ShardPlan], model: VQGANModel, config: dict) -> dict[str, Any]:
    """Gather every shard's summary into manifest.json (shards without samples are left out)."""
    summaries = [json.loads((out_dir / PROGRESS_DIR / f"{s.name}.json").read_text()) for s in shards]
    kinds: dict[str, int] = {}
    for summary in summaries:
        for kind, tokens in summary["kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + tokens
    skipped = [entry for summary in summaries for entry in summary["skipped"]]
    manifest = manifest_dict(
        [s for s in summaries if s["samples"]],
        kinds,
        model.config.tokens_per_image,
        model.config.num_embeddings,
        config,
        files=sum(s["files"] for s in summaries),
        skipped=skipped,
    )
    write_manifest(out_dir, manifest)
    return manifest

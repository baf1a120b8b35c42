"""`python -m lvm.tokenize`: folders of images and videos → VQGAN codes in WebDataset shards.

    python -m lvm.tokenize inputs=[/data/laion_part0] output_dir=/data/tok/laion0 tokenizer_path=/ckpt/vqgan
    torchrun --nproc_per_node 8 -m lvm.tokenize inputs=[files.txt] output_dir=... tokenizer_path=...

Every input file becomes one sample: an image gives `kind: "image"` and tokens_per_image codes, a
video gives `kind: "video"` and the codes of its frames (every `video.frame_stride`-th, at most
`video.max_frames`). The sentence builders of `data_pipelines/` cut these into visual sentences.

How the work is laid out, so that a run can be stopped and restarted at any point:
- the sorted file list is cut into shards of `files_per_shard` files, shard i holding files
  [i·n, (i+1)·n); shard i is written by rank i mod world_size (ranks from torchrun's environment),
  so every rank knows its work without talking to the others;
- a shard is written whole, as `<name>.tar.tmp` renamed to `<name>.tar`, then its summary (samples,
  tokens, skipped files) goes to `progress/<name>.json` the same way; a restarted run skips the
  shards that have both. `plan.json` records the file list's hash, so a restart on other inputs is refused;
- when every shard is done, rank 0 writes `manifest.json`, which `lvm.data` reads.

Files are decoded and resized in DataLoader workers (uint8, so little crosses the process
boundary) while the main process encodes: under `torch.inference_mode`, NHWC (`channels_last`) and,
on GPUs, bf16 autocast (`precision`). Unreadable files are reported by name, counted and skipped, or
stop the run with `strict=true`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from lvm.core.atomic_files import write_json_atomic
from lvm.core.devices import resolve_device, resolve_precision
from lvm.core.errors import report_user_errors
from lvm.core.progress import ImagesPerSecond
from lvm.data.manifest import PROGRESS_DIR, check_plan, manifest_dict, write_manifest
from lvm.data.shards import VisualSentence, write_shard_file
from lvm.media.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, expand_inputs
from lvm.media.images import ImageReadError, read_image_array
from lvm.media.skips import BadInputError
from lvm.media.video import read_video_frames
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.codec import encode_images, to_channels_last
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


# --- decoding, in DataLoader workers ---------------------------------------------------------------


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


# --- progress ---------------------------------------------------------------------------------------


# --- the job ----------------------------------------------------------------------------------------


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


def tokenize(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """The whole job for this process (see the module docstring); returns counts, and on rank 0 the
    manifest once every shard is done."""
    console = console or Console()
    rank, world_size = distributed_rank()
    if world_size > 1 and not dist.is_initialized():
        # Only for the closing barrier: the ranks split the work without talking.
        dist.init_process_group(backend="gloo")
    out_dir = Path(cfg.output_dir)
    (out_dir / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    settings = TokenizeSettings(
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        center_crop=cfg.center_crop,
        frame_stride=cfg.video.frame_stride,
        max_frames=cfg.video.max_frames,
        channels_last=cfg.channels_last,
        autocast_dtype=resolve_precision(cfg.precision, device),
        strict=cfg.strict,
        progress=cfg.progress and rank == 0,
    )
    if settings.frame_stride < 1:
        raise ValueError(f"video.frame_stride must be >= 1, got {settings.frame_stride}")

    model = load_vqgan(cfg.tokenizer_path, map_location=device).eval()
    if settings.channels_last:
        to_channels_last(model)
    files = list_inputs(list(cfg.inputs))
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    check_plan(out_dir, file_plan(files, cfg.files_per_shard, model.config.to_dict()))
    shards = plan_shards(files, cfg.files_per_shard)
    mine = [s for s in shards if s.index % world_size == rank]
    todo = [s for s in mine if not shard_is_done(out_dir, s)]
    if rank == 0:
        console.print(
            f"{len(files)} files → {len(shards)} shards in {out_dir} "
            f"({world_size} process{'es' if world_size > 1 else ''}, device {device}); "
            f"this process: {len(mine) - len(todo)} of {len(mine)} shards already done"
        )
    start = time.perf_counter()
    totals = tokenize_shards(model, todo, out_dir, root, device, settings, console)
    totals["seconds"] = time.perf_counter() - start
    if world_size > 1:
        dist.barrier()
    if rank == 0:
        missing = [s.name for s in shards if not shard_is_done(out_dir, s)]
        if missing:
            raise RuntimeError(f"{out_dir}: shards {missing[:5]} are not done; rerun to finish them")
        config = {
            "inputs": list(map(str, cfg.inputs)),
            "tokenizer_path": str(cfg.tokenizer_path),
            "files_per_shard": cfg.files_per_shard,
            "center_crop": cfg.center_crop,
            "video": OmegaConf.to_container(cfg.video),
        }
        totals["manifest"] = write_final_manifest(out_dir, shards, model, config)
        print_summary(console, totals, out_dir)
    if world_size > 1:
        dist.barrier()
    return totals


def print_summary(console: Console, totals: dict[str, Any], out_dir: Path) -> None:
    manifest = totals["manifest"]
    table = Table(title=f"lvm.tokenize → {out_dir}")
    for column in ("files", "samples", "tokens", "skipped", "this run: images", "this run: img/s"):
        table.add_column(column, justify="right")
    rate = totals["images"] / totals["seconds"] if totals["seconds"] > 0 else 0.0
    table.add_row(
        str(manifest["files"]),
        str(manifest["samples"]),
        str(manifest["tokens"]),
        str(len(manifest["skipped"])),
        str(totals["images"]),
        f"{rate:.1f}",
    )
    console.print(table)
    for entry in manifest["skipped"]:
        console.print(f"[yellow]skipped[/] {entry['path']}: {entry['reason']}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="tokenize")
@report_user_errors
def main(cfg: DictConfig) -> None:
    tokenize(cfg)


if __name__ == "__main__":
    main()

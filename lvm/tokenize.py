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

import os
import time
from pathlib import Path
from typing import Any

import hydra
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lvm.core.devices import resolve_device, resolve_precision
from lvm.core.errors import report_user_errors
from lvm.data.manifest import PROGRESS_DIR, check_plan
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.codec import to_channels_last
from lvm.tokenizer.files_to_shards import (
    TokenizeSettings,
    distributed_rank,
    file_plan,
    list_inputs,
    plan_shards,
    shard_is_done,
    tokenize_shards,
    write_final_manifest,
)

# --- the job ----------------------------------------------------------------------------------------


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

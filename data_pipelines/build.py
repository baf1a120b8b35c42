"""`python -m data_pipelines.build`: a sentence builder's output → curation → VQGAN codes → shards.

    python -m data_pipelines.build pipeline=video pipeline.builder.paths=[/data/a.mp4,/data/b.mp4] \\
        output_dir=/data/shards/video tokenizer_path=/ckpt/vqgan curation.min_side=128

`pipeline=<kind>` picks conf/pipeline/<kind>.yaml, whose `builder` is a partial of one of the
`data_pipelines` builders; it is called with the tokenizer's `size`, `rng_seed=seed`, a SkipCounter
and `strict`. Its sentences pass the curation filters (data_pipelines/curation.py), are encoded in
batches of about `images_per_batch` images (lvm/data/image_sentences.py) and written as WebDataset
shards of `samples_per_shard` sentences (lvm/data/shards.py), then `manifest.json`, which `lvm.data`
reads.

Resuming: the sentence stream is a function of the config (builders draw from `seed`), so shard i is
always sentences [i·n, (i+1)·n) of it. A shard is written whole (`.tar.tmp` renamed to `.tar`), then
its record goes to `progress/<shard>.json`; a rerun regenerates the stream — decoding and curating
everything again, which is what keeps the skip and filter counts whole — but tokenizes and writes
only the sentences of shards without both files. Each record holds a fingerprint of its sentences'
kinds, source files and layouts, so a rerun whose stream came out differently (files added or
removed under the same config) is refused instead of mixing two streams; `plan.json` refuses a rerun
with another config or tokenizer (as `lvm.tokenize` does).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from data_pipelines.curation import REASONS, Curator
from lvm.core.atomic_files import write_json_atomic
from lvm.core.devices import resolve_device
from lvm.core.errors import report_user_errors
from lvm.core.progress import ImagesPerSecond
from lvm.data.image_sentences import ImageSentence, tokenize_sentences
from lvm.data.manifest import MANIFEST_NAME, PROGRESS_DIR, check_plan, manifest_dict, write_manifest
from lvm.data.shards import VisualSentence, write_shard_file
from lvm.media.skips import SkipCounter
from lvm.tokenizer.checkpoint import find_weights_file, load_vqgan
from lvm.tokenizer.vqgan import VQGANModel

SHARD_PREFIX = "shard"
# Which files of a sentence the duplicate filter leaves uncompared (its "groups", see curation.py):
# frames of one clip or views of one object share a folder and look alike by design; an image and its
# annotations (a gray version, an edge map) share a file stem and may hash alike.
FOLDER_GROUPED_KINDS = frozenset({"sequence", "multi_sequence", "multiview"})
STEM_GROUPED_KINDS = frozenset({"paired", "multi_dataset"})


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}-{index:06d}.tar"


# --- the plan: what fixes the stream and its codes ---------------------------------------------------


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sentence_fingerprint(sentence: ImageSentence) -> bytes:
    """What identifies a sentence in the stream without its pixels: kind, files, image count, meta."""
    facts = {"kind": sentence.kind, "source": list(sentence.source), "n_images": len(sentence), "meta": sentence.meta}
    return json.dumps(facts, sort_keys=True, default=str).encode()


# --- shards -------------------------------------------------------------------------------------------


def read_record(out_dir: Path, index: int) -> dict[str, Any] | None:
    """Shard `index`'s progress record when the shard is done (record and tar both there), else None."""
    record = out_dir / PROGRESS_DIR / f"{shard_name(index)}.json"
    if not record.is_file() or not (out_dir / shard_name(index)).is_file():
        return None
    return json.loads(record.read_text())


def finish_shard(
    out_dir: Path, index: int, sentences: list[VisualSentence], keys: list[str], fingerprint: str, model: VQGANModel
) -> dict[str, Any]:
    """The shard (atomically), then its record (atomically): a crash in between redoes the shard."""
    config = model.config
    entry = write_shard_file(
        out_dir / shard_name(index),
        sentences,
        keys,
        vocab_size=config.num_embeddings,
        tokens_per_image=config.tokens_per_image,
    )
    record = {**entry, "fingerprint": fingerprint}
    write_json_atomic(out_dir / PROGRESS_DIR / f"{shard_name(index)}.json", record)
    return record


@dataclass
class ShardTotals:
    """What one call of `write_shards` did."""

    sentences: int = 0  # sentences in the whole (curated) stream
    shards: int = 0  # shards the stream fills
    shards_written: int = 0  # ... of which this call wrote
    images_tokenized: int = 0
    seconds: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)  # every shard's record, in order


class _StreamFingerprints:
    """Per-shard running hashes of the stream; checks shards done earlier against their records."""

    def __init__(self, out_dir: Path, samples_per_shard: int) -> None:
        self.out_dir, self.n = out_dir, samples_per_shard
        self.digests: dict[int, Any] = {}  # shard → running sha256
        self.counts: dict[int, int] = {}
        self.done: dict[int, dict[str, Any]] = {}

    def add(self, index: int, sentence: ImageSentence) -> int:
        shard = index // self.n
        if shard not in self.digests:
            if shard > 0:
                self.verify(shard - 1)
            self.digests[shard], self.counts[shard] = hashlib.sha256(), 0
            record = read_record(self.out_dir, shard)
            if record is not None:
                self.done[shard] = record
        self.digests[shard].update(sentence_fingerprint(sentence))
        self.counts[shard] += 1
        return shard

    def hexdigest(self, shard: int) -> str:
        return self.digests[shard].hexdigest()

    def verify(self, shard: int) -> None:
        record = self.done.get(shard)
        if record is None:
            return
        count = self.counts[shard]  # a done shard was seen: verify runs once its sentences are all in
        if count != record["samples"] or self.hexdigest(shard) != record["fingerprint"]:
            raise ValueError(
                f"{self.out_dir / PROGRESS_DIR / (shard_name(shard) + '.json')}: field 'fingerprint' "
                f"({record['samples']} sentences) does not match this run's sentences for {shard_name(shard)} "
                f"({count} sentences): the inputs changed since that shard was written; use a new output_dir"
            )

    def verify_end(self, n_shards: int) -> None:
        """At the end of the stream: the last shard, and no done shard beyond the stream's end."""
        if n_shards:
            self.verify(n_shards - 1)
        beyond = n_shards
        if read_record(self.out_dir, beyond) is not None:
            raise ValueError(
                f"{self.out_dir / shard_name(beyond)}: a finished shard past the end of this run's "
                f"stream ({n_shards} shards): the inputs changed since it was written; "
                f"use a new output_dir"
            )


def write_shards(
    sentences: Iterable[ImageSentence],
    model: VQGANModel,
    out_dir: Path,
    samples_per_shard: int,
    images_per_batch: int = 256,
    progress: Progress | None = None,
    task: TaskID | None = None,
) -> ShardTotals:
    """Cut `sentences` into shards of `samples_per_shard` and write the shards not done yet (see the
    module docstring); sentences of done shards are counted and checked, never tokenized."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be ≥ 1, got {samples_per_shard}")
    if images_per_batch < 1:
        raise ValueError(f"images_per_batch must be ≥ 1, got {images_per_batch}")
    (out_dir / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
    totals = ShardTotals()
    fingerprints = _StreamFingerprints(out_dir, samples_per_shard)
    to_encode: deque[int] = deque()  # stream indices handed to the tokenizer, in order

    def pending() -> Iterator[ImageSentence]:
        for index, sentence in enumerate(sentences):
            shard = fingerprints.add(index, sentence)
            totals.sentences = index + 1
            if progress is not None and task is not None:
                progress.update(task, advance=1)
            if shard not in fingerprints.done:
                to_encode.append(index)
                yield sentence
        totals.shards = -(-totals.sentences // samples_per_shard)
        fingerprints.verify_end(totals.shards)

    start = time.perf_counter()
    shard, buffer, keys = -1, [], []
    # tokenize_sentences keeps input order, so the queue says which stream index each output is.
    for visual in tokenize_sentences(pending(), model, images_per_batch):
        index = to_encode.popleft()
        if index // samples_per_shard != shard:
            assert not buffer, "a shard's sentences arrive together"
            shard = index // samples_per_shard
        buffer.append(visual)
        keys.append(f"{index:09d}")
        totals.images_tokenized += visual.n_images
        if progress is not None and task is not None:
            progress.update(task, images=totals.images_tokenized)
        # A shard is complete at n sentences, or when the stream ends (checked after the loop). Its
        # fingerprint is final: the stream has already yielded all of its sentences.
        if len(buffer) == samples_per_shard:
            finish_shard(out_dir, shard, buffer, keys, fingerprints.hexdigest(shard), model)
            totals.shards_written += 1
            buffer, keys = [], []
    if buffer:  # the last, shorter shard
        finish_shard(out_dir, shard, buffer, keys, fingerprints.hexdigest(shard), model)
        totals.shards_written += 1
    totals.seconds = time.perf_counter() - start
    totals.records = [read_record(out_dir, i) for i in range(totals.shards)]
    missing = [shard_name(i) for i, record in enumerate(totals.records) if record is None]
    if missing:  # cannot happen unless files vanish while running; never write a manifest over a hole
        raise RuntimeError(f"{out_dir}: shards {missing[:5]} are not done after the run")
    return totals


# --- the job ------------------------------------------------------------------------------------------


def dedup_groups(sentence: ImageSentence) -> list[str] | None:
    """Each source file's group for the duplicate filter: its folder or its stem by kind, else None."""
    if sentence.kind in FOLDER_GROUPED_KINDS:
        return [os.path.dirname(os.path.abspath(path)) for path in sentence.source]
    if sentence.kind in STEM_GROUPED_KINDS:
        return [os.path.splitext(os.path.basename(path))[0] for path in sentence.source]
    return None


def curated(sentences: Iterable[ImageSentence], curator: Curator) -> Iterator[ImageSentence]:
    """The sentences whose source files all pass `curator` (its counts record the rest)."""
    for sentence in sentences:
        if curator.admit_sentence(sentence.source, dedup_groups(sentence)):
            yield sentence


class ConsoleSkipCounter(SkipCounter):
    """A SkipCounter that prints each skip as it happens (above the progress bar) instead of warning."""

    def __init__(self, console: Console) -> None:
        super().__init__(warn=False)
        self.console = console

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        super().skip(path, reason)
        self.console.print(f"[yellow]skipped[/] {path}: {reason}")


def make_builder(cfg: DictConfig) -> functools.partial:
    """`cfg.pipeline.builder` instantiated: a partial waiting for size, rng_seed, skips and strict."""
    if "builder" not in cfg.pipeline:
        raise ValueError(
            f"pipeline (kind {cfg.pipeline.get('kind')!r}): missing field 'builder' "
            "(expected a _target_ builder function with _partial_: true)"
        )
    builder = instantiate(cfg.pipeline.builder, _convert_="all")
    if not isinstance(builder, functools.partial):
        raise ValueError(
            f"pipeline.builder ({cfg.pipeline.builder.get('_target_')}): expected _partial_: true, "
            f"so build can pass size, rng_seed, skips and strict; got {type(builder).__name__}"
        )
    return builder


def run_config(cfg: DictConfig, size: int) -> dict[str, Any]:
    """The settings stored in the manifest (the resolved pipeline, not Hydra's own fields)."""
    return {
        "name": cfg.name,
        "pipeline": OmegaConf.to_container(cfg.pipeline, resolve=True),
        "size": size,
        "seed": cfg.seed,
        "strict": cfg.strict,
        "samples_per_shard": cfg.samples_per_shard,
        "images_per_batch": cfg.images_per_batch,
        "tokenizer_path": str(cfg.tokenizer_path),
        "curation": OmegaConf.to_container(cfg.curation, resolve=True),
    }


def build(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """The whole job (see the module docstring); returns the manifest and this run's counts."""
    console = console or Console()
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model = load_vqgan(cfg.tokenizer_path, map_location=device).eval()
    resolution = model.config.resolution
    size = resolution if cfg.size is None else int(cfg.size)
    if size != resolution:
        raise ValueError(
            f"size: {size}, but the tokenizer at {cfg.tokenizer_path} encodes {resolution}×{resolution} "
            f"images only; leave size null or set it to {resolution}"
        )
    curator = Curator(**OmegaConf.to_container(cfg.curation, resolve=True))
    builder = make_builder(cfg)
    config = run_config(cfg, size)
    check_plan(
        out_dir,
        {
            "pipeline": config["pipeline"],
            "size": size,
            "seed": cfg.seed,
            "curation": config["curation"],
            "samples_per_shard": cfg.samples_per_shard,
            "tokenizer": model.config.to_dict(),
            "tokenizer_weights_sha256": file_sha256(find_weights_file(cfg.tokenizer_path)),
        },
    )
    # A manifest from an earlier run would describe shards this run may be about to redo.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)

    progress = Progress(
        SpinnerColumn(),
        TextColumn(f"[bold]build {cfg.pipeline.kind}"),
        TextColumn("{task.completed} sentences"),
        ImagesPerSecond(),
        TimeElapsedColumn(),
        console=console,
        disable=not cfg.progress,
    )
    skips = ConsoleSkipCounter(progress.console)
    sentences = builder(size=size, rng_seed=cfg.seed, skips=skips, strict=cfg.strict)
    if curator.active:
        sentences = curated(sentences, curator)
    console.print(
        f"building {cfg.pipeline.kind} sentences → {out_dir} (device {device}, "
        f"{cfg.samples_per_shard} sentences per shard)"
    )
    with progress:
        task = progress.add_task("build", total=None, images=0)
        totals = write_shards(sentences, model, out_dir, cfg.samples_per_shard, cfg.images_per_batch, progress, task)

    kinds: dict[str, int] = {}
    for record in totals.records:
        for kind, tokens in record["kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + tokens
    manifest = manifest_dict(
        totals.records,
        kinds,
        model.config.tokens_per_image,
        model.config.num_embeddings,
        config,
        files=skips.files_seen,
        skipped=[{"path": p, "reason": r} for p, r in skips.skipped],
        filtered=curator.summary(),
    )
    write_manifest(out_dir, manifest)
    result = {"manifest": manifest, "totals": totals}
    print_summary(console, out_dir, manifest, totals)
    return result


def print_summary(console: Console, out_dir: Path, manifest: dict[str, Any], totals: ShardTotals) -> None:
    """Samples, tokens (per kind), skipped files with reasons and the filters' drops, as rich tables."""
    table = Table(title=f"data_pipelines.build → {out_dir}")
    # Short headings: the table should fit an 80-column terminal.
    columns = ("shards (new)", "samples", "tokens", "files", "skipped", "filtered", "images now", "img/s")
    for column in columns:
        table.add_column(column, justify="right")
    filtered = manifest["filtered"]
    rate = totals.images_tokenized / totals.seconds if totals.seconds > 0 else 0.0
    table.add_row(
        f"{len(manifest['shards'])} ({totals.shards_written})",
        str(manifest["samples"]),
        str(manifest["tokens"]),
        str(manifest["files"]),
        str(len({entry["path"] for entry in manifest["skipped"]})),
        str(sum(filtered["sentences_dropped"].values())),
        str(totals.images_tokenized),
        f"{rate:.1f}",
    )
    console.print(table)
    if len(manifest["kinds"]) > 1:
        kinds = Table(title="tokens per kind")
        kinds.add_column("kind")
        kinds.add_column("tokens", justify="right")
        for kind, tokens in sorted(manifest["kinds"].items()):
            kinds.add_row(kind, str(tokens))
        console.print(kinds)
    if manifest["skipped"]:
        skipped = Table(title="skipped files")
        skipped.add_column("file")
        skipped.add_column("reason")
        for entry in manifest["skipped"]:
            skipped.add_row(entry["path"], entry["reason"])
        console.print(skipped)
    thresholds = filtered["thresholds"]
    if any(v is not None for v in thresholds.values()):
        curation = Table(title="curation filters")
        for column, justify in (
            ("filter", "left"),
            ("threshold", "right"),
            ("files rejected", "right"),
            ("sentences dropped", "right"),
        ):
            curation.add_column(column, justify=justify)
        setting = {"min_side": "min_side", "max_aspect": "max_aspect", "duplicate": "dedup_max_distance"}
        for reason in REASONS:
            threshold = thresholds.get(setting.get(reason, ""), None)
            files, dropped = filtered["files_rejected"].get(reason, 0), filtered["sentences_dropped"].get(reason, 0)
            if threshold is not None or files or dropped:
                curation.add_row(reason, "" if threshold is None else str(threshold), str(files), str(dropped))
        curation.add_row("kept", "", "", str(filtered["sentences_kept"]))
        console.print(curation)


@hydra.main(version_base="1.3", config_path="../conf", config_name="build")
@report_user_errors
def main(cfg: DictConfig) -> None:
    build(cfg)


if __name__ == "__main__":
    main()

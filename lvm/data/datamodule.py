"""MixtureDataModule: streams shards of several sources, mixes them by weight, packs them into seq_len.

Training data is one infinite, deterministic stream per (rank, worker):
    per source: shards in a reshuffled order each pass → a shuffle buffer of sentences
    → mixture: the next sentence comes from source s with probability weight_s / Σ weights
    → packing: sentences concatenated with no separators (the original's DATASET.md and tokenize_examples/) and cut
    into windows of seq_len + 1
      tokens at a stride of seq_len, so every token is a target exactly once, as in the original
    → sample {"input_ids": w[:-1], "labels": w[1:]} (seq_len,) int64; batches stack them (B, seq_len).
The stream is a pure function of (seed, rank, stream index), so a run resumes exactly by regenerating
it and skipping the batches already consumed (`state_dict` / `load_state_dict`; Lightning stores them
in every checkpoint). Skipping re-reads the skipped shards; it costs I/O, not training.

Validation is finite and deterministic: each source's sentences in stored order, packed within that
source alone (the tail shorter than seq_len + 1 tokens is dropped); a batch holds one source's windows
and names it per row ("source", list[str]) for per-source losses; sources take turns batch by batch.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lvm.data.shards import DEFAULT_VOCAB_SIZE, VisualSentence, expand_sources, iter_shard, manifest_of

Sample = dict[str, torch.Tensor]


def _check_tokens_per_image(sentence: VisualSentence, path: str, tokens_per_image: int) -> None:
    # Packing keeps images whole only if every sentence uses the configured image size.
    if sentence.tokens_per_image != tokens_per_image:
        raise ValueError(
            f"{path}: sample {sentence.key} has {sentence.tokens_per_image} tokens per image, but "
            f"data.tokens_per_image is {tokens_per_image}"
        )


def pack_windows(sentences: Iterator[VisualSentence], seq_len: int, skip_tokens: int = 0) -> Iterator[np.ndarray]:
    """Windows (seq_len + 1,) int64 of the concatenated sentences, at a stride of seq_len tokens.

    Window k covers stream tokens [k·seq_len, (k+1)·seq_len]; `skip_tokens` (a multiple of seq_len)
    drops the first windows without building them.
    """
    pieces: list[np.ndarray] = []
    have = 0
    for sentence in sentences:
        tokens = sentence.tokens
        if skip_tokens:
            if len(tokens) <= skip_tokens:
                skip_tokens -= len(tokens)
                continue
            tokens, skip_tokens = tokens[skip_tokens:], 0
        pieces.append(tokens)
        have += len(tokens)
        if have <= seq_len:
            continue
        stream = np.concatenate(pieces).astype(np.int64, copy=False)
        start = 0
        while len(stream) - start > seq_len:
            yield stream[start : start + seq_len + 1]
            start += seq_len
        pieces, have = [stream[start:]], len(stream) - start


def _window_sample(window: np.ndarray) -> Sample:
    return {"input_ids": torch.from_numpy(window[:-1]), "labels": torch.from_numpy(window[1:])}


def _shuffle(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Buffer shuffle: once `size` items are held, each new item swaps out a uniformly chosen one."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)  # only reached by finite inputs
    yield from buffer


class CorruptShardWarning(UserWarning):
    """A shard that could not be read was skipped; the message names it and says why."""


class ShardReader:
    """Reads a shard's sentences whole, for every stream of one DataModule.

    A shard that cannot be read (truncated, corrupt header, malformed sample) is skipped as a whole —
    a `CorruptShardWarning` names it, `skipped` counts it once per process, summed over DataLoader
    workers through shared memory — or, with `strict`, its error is raised. Whole shards keep the
    stream deterministic: a bad shard is skipped the same way on every pass and after a resume.
    """

    def __init__(self, vocab_size: int, tokens_per_image: int, strict: bool = False) -> None:
        self.vocab_size = vocab_size
        self.tokens_per_image = tokens_per_image
        self.strict = strict
        self._skipped = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._bad: set[str] = set()

    @property
    def skipped(self) -> int:
        """Shards skipped so far (by this process and its DataLoader workers)."""
        return int(self._skipped.item())

    def read(self, path: str) -> list[VisualSentence]:
        try:
            sentences = list(iter_shard(path, self.vocab_size))
        except (ValueError, OSError) as error:
            if self.strict:
                raise
            if path not in self._bad:
                self._bad.add(path)
                self._skipped += 1
                warnings.warn(f"{path}: skipped ({error})", CorruptShardWarning, stacklevel=2)
            return []
        for sentence in sentences:  # a wrong image size is a config error, never skipped
            _check_tokens_per_image(sentence, path, self.tokens_per_image)
        return sentences


class MixtureStream(IterableDataset):
    """The infinite training stream of one rank: samples {"input_ids", "labels"} (seq_len,) int64.

    `sources` is a list of (name, shard paths, weight). Each DataLoader worker serves a *logical*
    stream; which one, and how many of its batches to skip, follows from `set_start(n)` (n = batches
    this rank already consumed) because the DataLoader takes batch i from worker i mod num_workers.
    """

    def __init__(
        self,
        sources: list[tuple[str, list[str], float]],
        seq_len: int,
        batch_size: int,
        tokens_per_image: int,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        reader: ShardReader | None = None,
    ) -> None:
        super().__init__()
        self.sources = sources
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.tokens_per_image = tokens_per_image
        self.vocab_size = vocab_size
        self.reader = reader or ShardReader(vocab_size, tokens_per_image)
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        # Shared memory: persistent workers read the start set by the main process at every epoch.
        self._start = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_start(self, batches_consumed: int) -> None:
        """Make the next iteration begin after `batches_consumed` batches of this rank."""
        self._start.fill_(batches_consumed)

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n = int(self._start.item())
        # After n batches the next one (new worker 0's first) is batch n, which logical stream n mod W made.
        logical = (worker + n) % n_workers
        consumed = n // n_workers + (1 if logical < n % n_workers else 0)
        stream = self.rank * n_workers + logical
        sentences = self.sentences(stream, self.world_size * n_workers)
        for window in pack_windows(sentences, self.seq_len, skip_tokens=consumed * self.batch_size * self.seq_len):
            yield _window_sample(window)

    def sentences(self, stream: int, n_streams: int) -> Iterator[VisualSentence]:
        """The mixed, shuffled, endless sentence sequence of one logical stream out of `n_streams`."""
        per_source = [
            _shuffle(
                self._source_sentences(i, stream, n_streams),
                self.shuffle_buffer,
                np.random.default_rng([self.seed, 1, stream, i]),
            )
            for i in range(len(self.sources))
        ]
        weights = np.array([w for _, _, w in self.sources], dtype=np.float64)
        cumulative = np.cumsum(weights / weights.sum())
        rng = np.random.default_rng([self.seed, 2, stream])
        last = len(per_source) - 1
        while True:
            i = min(int(np.searchsorted(cumulative, rng.random(), side="right")), last)
            yield next(per_source[i])

    def _source_sentences(self, index: int, stream: int, n_streams: int) -> Iterator[VisualSentence]:
        """Endless passes over one source's shards; this stream's share of each pass, in stored order.

        With at least as many shards as streams, each stream reads its own shards; otherwise every
        stream reads all shards and keeps every n_streams-th sentence (disjoint still); a source with
        fewer sentences than streams is read whole by every stream, which then differ only by RNG.
        """
        name, shards, _ = self.sources[index]
        by_shard = len(shards) >= n_streams
        for epoch in itertools.count():
            # Same order on every stream (seeded by seed and pass only), so the split stays disjoint.
            order = np.random.default_rng([self.seed, 0, index, epoch]).permutation(len(shards))
            paths = [shards[j] for j in (order[stream::n_streams] if by_shard else order)]
            position = kept = 0
            for path in paths:
                for sentence in self.reader.read(path):
                    mine = by_shard or position % n_streams == stream
                    position += 1
                    if mine:
                        kept += 1
                        yield sentence
            if kept == 0:
                if by_shard or n_streams == 1:
                    raise ValueError(f"train source '{name}': no sentences in its shards {paths}")
                stream, n_streams = 0, 1


class ValidationBatches(IterableDataset):
    """Finite, deterministic validation batches, each from one source; rank r keeps windows r, r+W, … of each."""

    def __init__(
        self,
        sources: list[tuple[str, list[str]]],
        seq_len: int,
        batch_size: int,
        tokens_per_image: int,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        rank: int = 0,
        world_size: int = 1,
        reader: ShardReader | None = None,
    ) -> None:
        super().__init__()
        self.sources = sources
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.tokens_per_image = tokens_per_image
        self.vocab_size = vocab_size
        self.rank = rank
        self.world_size = world_size
        self.reader = reader or ShardReader(vocab_size, tokens_per_image)

    def _sentences(self, shards: list[str]) -> Iterator[VisualSentence]:
        for path in shards:
            yield from self.reader.read(path)

    def _source_batches(self, name: str, shards: list[str]) -> Iterator[dict[str, Any]]:
        rows: list[np.ndarray] = []
        count = 0
        for window in pack_windows(self._sentences(shards), self.seq_len):
            if count % self.world_size == self.rank:
                rows.append(window)
            count += 1
            if len(rows) == self.batch_size:
                yield self._batch(rows, name)
                rows = []
        if count == 0:
            raise ValueError(f"val source '{name}': fewer than seq_len + 1 = {self.seq_len + 1} tokens in {shards}")
        if rows:
            yield self._batch(rows, name)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Sources take turns batch by batch, so a limit on validation batches still covers every source.
        active = [self._source_batches(name, shards) for name, shards in self.sources]
        while active:
            for batches in list(active):
                batch = next(batches, None)
                if batch is None:
                    active.remove(batches)
                else:
                    yield batch

    @staticmethod
    def _batch(rows: list[np.ndarray], name: str) -> dict[str, Any]:
        windows = torch.from_numpy(np.stack(rows))
        return {"input_ids": windows[:, :-1], "labels": windows[:, 1:], "source": [name] * len(rows)}


class _CountingIterator:
    """Passes batches through and reports each one handed to the caller."""

    def __init__(self, inner: Iterator, on_batch: Callable[[], None]) -> None:
        self.inner, self.on_batch = inner, on_batch

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.on_batch()
        return batch


class _ResumableLoader(DataLoader):
    """A DataLoader over a `MixtureStream` that tells the stream where to start at every `iter()`."""

    def __init__(
        self, dataset: MixtureStream, *, start_fn: Callable[[], int], on_batch: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(dataset, **kwargs)
        self._start_fn = start_fn
        self._on_batch = on_batch

    def __iter__(self) -> _CountingIterator:
        # Before super().__iter__(): that is when workers are forked or told to restart their iterator.
        self.dataset.set_start(self._start_fn())
        return _CountingIterator(super().__iter__(), self._on_batch)


def _parse_sources(sources: Mapping[str, Any] | None, what: str, weighted: bool) -> dict[str, dict[str, Any]]:
    if not sources:
        return {}
    parsed = {}
    for name, spec in sources.items():
        if not isinstance(spec, Mapping) or "path" not in spec:
            raise ValueError(f"{what}.{name} must be a mapping with a 'path' (and 'weight'), got {spec!r}")
        entry: dict[str, Any] = {"path": str(spec["path"])}
        if weighted:
            weight = float(spec.get("weight", 1.0))
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"{what}.{name}: weight {spec.get('weight')!r} must be a positive number")
            entry["weight"] = weight
        parsed[str(name)] = entry
    return parsed


class MixtureDataModule(pl.LightningDataModule):
    """Weighted mixture of shard sources, packed into (batch_size, seq_len) next-token batches.

    `train_sources` / `val_sources`: name → {"path": manifest.json | directory | glob | brace spec,
    "weight": float (train only)}. Training batches: {"input_ids", "labels"} LongTensor (B, seq_len);
    validation batches add "source": list[str] (the source name of each row).
    """

    def __init__(
        self,
        train_sources: Mapping[str, Mapping[str, Any]],
        val_sources: Mapping[str, Mapping[str, Any]] | None,
        seq_len: int,
        batch_size: int,
        tokens_per_image: int = 256,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.train_sources = _parse_sources(train_sources, "train_sources", weighted=True)
        self.val_sources = _parse_sources(val_sources, "val_sources", weighted=False)
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.tokens_per_image = int(tokens_per_image)
        self.vocab_size = int(vocab_size)
        self.num_workers = int(num_workers)
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self._check_arguments()
        # One reader for train and val: `skipped_shards` counts both.
        self.reader = ShardReader(self.vocab_size, self.tokens_per_image, strict=bool(strict))
        self._train_shards: dict[str, list[str]] | None = None
        self._val_shards: dict[str, list[str]] | None = None
        self._resume_batches = 0  # from load_state_dict
        self._pulled = 0  # batches handed out since then, when no Trainer counts them
        self._first_iter_pending = False  # the next iter() starts at _resume_batches

    def _check_arguments(self) -> None:
        # Checked at construction (cheap, no I/O) so a bad config fails before anything else starts.
        if not self.train_sources:
            raise ValueError("train_sources is empty: name at least one shard source with a path and a weight")
        for name, value in (
            ("seq_len", self.seq_len),
            ("batch_size", self.batch_size),
            ("tokens_per_image", self.tokens_per_image),
            ("vocab_size", self.vocab_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be ≥ 1, got {value}")
        if self.seq_len % self.tokens_per_image:
            raise ValueError(
                f"seq_len {self.seq_len} is not a multiple of tokens_per_image {self.tokens_per_image}: "
                f"training sequences must hold whole images"
            )
        if self.num_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError(f"num_workers ({self.num_workers}) and shuffle_buffer ({self.shuffle_buffer}) must be ≥ 0")

    @property
    def val_source_names(self) -> list[str]:
        return list(self.val_sources)

    @property
    def skipped_shards(self) -> int:
        """Unreadable shards skipped so far (each named in a CorruptShardWarning); 0 when strict."""
        return self.reader.skipped

    # -- setup --------------------------------------------------------------------------------------
    def _resolve(self, sources: dict[str, dict[str, Any]], what: str) -> dict[str, list[str]]:
        resolved = {}
        for name, spec in sources.items():
            manifest = manifest_of(spec["path"])
            if manifest is not None and manifest["tokens_per_image"] not in (None, self.tokens_per_image):
                raise ValueError(
                    f"{what} source '{name}' ({spec['path']}): shards hold {manifest['tokens_per_image']} tokens "
                    f"per image, but data.tokens_per_image is {self.tokens_per_image}"
                )
            resolved[name] = expand_sources(spec["path"])
        return resolved

    def setup(self, stage: str | None = None) -> None:
        """Resolve every source to its shard list (and check manifests) once."""
        if self._train_shards is None and stage in (None, "fit"):
            self._train_shards = self._resolve(self.train_sources, "train")
        if self._val_shards is None and stage in (None, "fit", "validate"):
            self._val_shards = self._resolve(self.val_sources, "val")

    def _rank_and_world_size(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    # -- loaders ------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self._train_shards is None:
            self.setup("fit")
        rank, world_size = self._rank_and_world_size()
        dataset = MixtureStream(
            [(name, self._train_shards[name], spec["weight"]) for name, spec in self.train_sources.items()],
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            tokens_per_image=self.tokens_per_image,
            vocab_size=self.vocab_size,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            reader=self.reader,
        )
        return _ResumableLoader(
            dataset,
            start_fn=self._next_start,
            on_batch=self._count_batch,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self._val_shards is None:
            self.setup("validate")
        if not self._val_shards:
            return []  # no validation sources: Lightning skips validation
        rank, world_size = self._rank_and_world_size()
        dataset = ValidationBatches(
            [(name, shards) for name, shards in self._val_shards.items()],
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            tokens_per_image=self.tokens_per_image,
            vocab_size=self.vocab_size,
            rank=rank,
            world_size=world_size,
            reader=self.reader,
        )
        # Already batched; read in the main process (validation sets are small and read once per run).
        return DataLoader(dataset, batch_size=None, num_workers=0)

    # -- exact resume -------------------------------------------------------------------------------
    def _fitting_trainer(self) -> pl.Trainer | None:
        trainer = self.trainer
        return trainer if trainer is not None and trainer.state.fn == TrainerFn.FITTING else None

    def _batches_consumed(self) -> int:
        trainer = self._fitting_trainer()
        if trainer is not None:
            # `ready` counts batches handed to the training step: incremented after the fetch (so not
            # the fetcher's one-batch prefetch) and before on_train_batch_end, where checkpoints are saved.
            return int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)
        return self._resume_batches + self._pulled

    def _next_start(self) -> int:
        if not self._first_iter_pending:
            return self._batches_consumed()  # a fresh start, or a later epoch of the same loader
        self._first_iter_pending = False
        trainer = self._fitting_trainer()
        if trainer is not None and self._batches_consumed() != self._resume_batches:
            rank_zero_warn(
                f"MixtureDataModule: restored data position {self._resume_batches} batches disagrees with the "
                f"trainer's {self._batches_consumed()}; resuming from the restored position"
            )
        return self._resume_batches

    def _count_batch(self) -> None:
        self._pulled += 1

    def state_dict(self) -> dict[str, Any]:
        """The training stream's position: batches consumed on each rank, and what defines the stream."""
        return {
            "batches_yielded": self._batches_consumed(),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "world_size": self._rank_and_world_size()[1],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next training loader skip exactly the batches consumed before the checkpoint."""
        if "batches_yielded" not in state_dict:
            raise ValueError(f"MixtureDataModule state has no field 'batches_yielded' (fields: {sorted(state_dict)})")
        current = {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "world_size": self._rank_and_world_size()[1],
        }
        for key, value in current.items():
            if key in state_dict and state_dict[key] != value:
                rank_zero_warn(
                    f"MixtureDataModule: resuming with {key}={value}, but the checkpoint was written with "
                    f"{key}={state_dict[key]}; the data after resume will not be what the original run would have seen"
                )
        self._resume_batches = int(state_dict["batches_yielded"])
        self._pulled = 0
        self._first_iter_pending = True

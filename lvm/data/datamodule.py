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

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from lvm.data.manifest import expand_sources, manifest_of
from lvm.data.shards import DEFAULT_VOCAB_SIZE
from lvm.data.streams import MixtureStream, ShardReader, ValidationBatches


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

"""The datasets the DataModule hands to its loaders: reading shards (corrupt ones named, counted and
skipped), the weighted training mixture, and per-source validation batches."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lvm.data.packing import Sample, check_tokens_per_image, pack_windows, shuffled, window_sample
from lvm.data.shards import DEFAULT_VOCAB_SIZE, VisualSentence, iter_shard


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
            check_tokens_per_image(sentence, path, self.tokens_per_image)
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
            yield window_sample(window)

    def sentences(self, stream: int, n_streams: int) -> Iterator[VisualSentence]:
        """The mixed, shuffled, endless sentence sequence of one logical stream out of `n_streams`."""
        per_source = [
            shuffled(
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

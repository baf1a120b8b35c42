"""The same global batches for any number of processes, so 1-process and 2-process runs can be compared.

Global batch k is a fixed function of (seed, k); rank r of W takes rows [r·B/W, (r+1)·B/W). With the
gradient mean over ranks this is exactly the 1-process step on the whole global batch.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset


class GlobalBatchSlices(IterableDataset):
    def __init__(
        self, num_batches: int, global_batch: int, seq_len: int, rank: int, world_size: int, seed: int, start: int = 0
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"global_batch {global_batch} is not divisible by {world_size} processes")
        self.num_batches, self.global_batch, self.seq_len, self.seed = num_batches, global_batch, seq_len, seed
        self.start = start
        self.rows = slice(rank * global_batch // world_size, (rank + 1) * global_batch // world_size)

    def __iter__(self):
        for k in range(self.start, self.num_batches):
            generator = torch.Generator().manual_seed(self.seed * 100_003 + k)
            tokens = torch.randint(0, 8192, (self.global_batch, self.seq_len + 1), generator=generator)[self.rows]
            yield {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]}


class FixedGlobalBatches(pl.LightningDataModule):
    """`num_batches` global batches of `global_batch` random-token sentences, split across ranks."""

    def __init__(
        self, global_batch: int = 4, seq_len: int = 32, tokens_per_image: int = 16, num_batches: int = 64, seed: int = 0
    ) -> None:
        super().__init__()
        self.global_batch, self.seq_len, self.tokens_per_image = global_batch, seq_len, tokens_per_image
        self.num_batches, self.seed = num_batches, seed

    def _loader(self, seed: int, start: int = 0) -> DataLoader:
        dataset = GlobalBatchSlices(
            self.num_batches,
            self.global_batch,
            self.seq_len,
            self.trainer.global_rank,
            self.trainer.world_size,
            seed,
            start,
        )
        # Iterable: each item is already this rank's slice, and Lightning adds no DistributedSampler.
        return DataLoader(dataset, batch_size=None, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        # On resume the trainer's step is restored before the loader is built: continue after it.
        return self._loader(self.seed, start=self.trainer.global_step * self.trainer.accumulate_grad_batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.seed + 1)

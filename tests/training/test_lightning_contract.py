"""The one Lightning loop field we read (there is no public API for it), checked on the pinned Lightning:
`trainer.fit_loop.epoch_loop.batch_progress.total.ready`, the training batches handed to the training step so
far. `MixtureDataModule` saves it in checkpoints to resume the data stream exactly (lvm/data/datamodule.py,
`_batches_consumed`). If a Lightning upgrade moves or redefines it, this fails with what to fix."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lvm.training.trainer_access import attached_trainer

MOVED = (
    "Lightning moved or redefined trainer.fit_loop.epoch_loop.batch_progress.total.ready, which "
    "lvm/data/datamodule.py (_batches_consumed) reads for exact resume: find its new home and update both"
)


class CountingModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.seen: list[tuple[int, int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).sum()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress
        self.seen.append((batch_idx, int(progress.total.ready)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_batch_progress_counts_the_batches_handed_to_the_training_step(tmp_path):
    module = CountingModule()
    assert attached_trainer(module) is None  # module.trainer raises until a Trainer takes the module
    trainer = pl.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(torch.randn(32, 2), batch_size=4))
    assert hasattr(trainer, "fit_loop") and hasattr(trainer.fit_loop, "epoch_loop"), MOVED
    assert module.seen == [(i, i + 1) for i in range(6)], MOVED  # 3 steps × 2 micro-batches, counted at batch end
    assert attached_trainer(module) is trainer

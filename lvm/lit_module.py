"""LVMLitModule: next-token cross-entropy on packed visual sentences, and nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy of logits (B, T, V) against labels (B, T); every token is valid."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, accuracy


class LVMLitModule(pl.LightningModule):
    """Trains `LLaMA` on batches {"input_ids": (B, T), "labels": (B, T)} of int64 token ids."""

    def __init__(
        self,
        model_config: ModelConfig | Mapping,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        if isinstance(model_config, Mapping):
            model_config = ModelConfig(**model_config)
        # Plain dict only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters({"model_config": model_config.to_dict()})
        self.model = LLaMA(model_config)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_loss = MeanMetric()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, accuracy = next_token_loss(self.model(batch["input_ids"]), batch["labels"])
        batch_size = batch["input_ids"].shape[0]  # said explicitly: batches also carry non-tensor fields
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/acc", accuracy, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, accuracy = next_token_loss(self.model(batch["input_ids"]), batch["labels"])
        self.val_loss.update(loss, weight=batch["labels"].numel())
        self.log("val/acc", accuracy, sync_dist=True, batch_size=batch["input_ids"].shape[0])

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()  # token-weighted mean over all ranks
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", torch.exp(loss))

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("LVMLitModule was built without an optimizer factory; pass optimizer=... to train it")
        optimizer = self.optimizer_factory(self.model)
        if self.scheduler_factory is None:
            return optimizer
        # Stepped per optimizer update; sized from config, never from trainer.estimated_stepping_batches
        # (which can skip restoring the data loader's state on resume, Lightning issue 20550).
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


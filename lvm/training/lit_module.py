"""LVMLitModule: next-token cross-entropy on packed visual sentences, and nothing else.

Training logs train/loss, train/acc, and the budget so far: train/tokens_seen (all devices) and
train/flops_spent = tokens_seen · ModelConfig.flops_per_token(T) (6·N + 12·L·d·T per token, the PaLM
appendix's count) and train/flops_spent_causal with the attention term halved (6·N + 6·L·d·T). `flops_per_batch` (the
same count for one
batch on all devices) is what Lightning's ThroughputMonitor turns into FLOP/s and MFU.

Validation logs val/loss and val/ppl over all tokens and, for batches that name each row's source
("source": list[str], as MixtureDataModule's validation batches do), val/loss/<source> and
val/ppl/<source>: token-weighted means over the epoch and over all ranks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA
from lvm.training.parallelize import parallelize
from lvm.training.strategies import FSDP2Strategy
from lvm.training.trainer_access import attached_trainer

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V) against labels (B, T); every token is valid."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of tokens whose argmax is the label (no gradient)."""
    return (logits.detach().argmax(-1) == labels).float().mean()


def batch_size_of(batch: Mapping[str, torch.Tensor]) -> int:
    """Sequences in a batch (ThroughputMonitor's `batch_size_fn`)."""
    return int(batch["input_ids"].shape[0])


def tokens_of(batch: Mapping[str, torch.Tensor]) -> int:
    """Input tokens in a batch (ThroughputMonitor's `length_fn`)."""
    return int(batch["input_ids"].numel())


def loss_by_source(token_loss: torch.Tensor, sources: Sequence[str]) -> dict[str, tuple[torch.Tensor, int]]:
    """Per source: (mean loss over its tokens, number of its tokens), from per-token losses (B, T) and
    the source name of each row, in order of first appearance."""
    if len(sources) != token_loss.shape[0]:
        raise ValueError(f"batch field 'source' names {len(sources)} rows, but the batch has {token_loss.shape[0]}")
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(sources):
        rows.setdefault(name, []).append(i)
    per_row = token_loss.mean(dim=1)  # rows are equally long, so a mean of row means is the token mean
    return {name: (per_row[index].mean(), len(index) * token_loss.shape[1]) for name, index in rows.items()}


def _compile_kwargs(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if options is None or ("enabled" in options and not options["enabled"]):
        return None
    return {key: value for key, value in options.items() if key != "enabled" and value is not None}


class LVMLitModule(pl.LightningModule):
    """Trains `LLaMA` on batches {"input_ids": (B, T), "labels": (B, T)} of int64 token ids."""

    def __init__(
        self,
        model_config: ModelConfig | Mapping,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        activation_checkpointing: bool = False,
        compile_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`compile_options`: None trains eagerly; a mapping (possibly empty) of `torch.compile` keyword
        arguments compiles each decoder block in place, so parameter names and checkpoints are unchanged.
        The `compile` config group's form is taken too: `enabled: false` trains eagerly, and the
        `enabled` key and null values are not passed on."""
        super().__init__()
        if isinstance(model_config, Mapping):
            model_config = ModelConfig(**model_config)
        # Plain dict only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters({"model_config": model_config.to_dict()})
        self.model = LLaMA(model_config)
        self.activation_checkpointing = activation_checkpointing
        self.compile_options = _compile_kwargs(compile_options)
        self._parallelized = False
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_loss = MeanMetric()
        # One MeanMetric per validation source, in a ModuleList (any name is fine, and they follow the
        # module's device); added from the datamodule's source names or when a batch names a new one.
        self.val_source_loss = nn.ModuleList()
        self._val_source_index: dict[str, int] = {}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def configure_model(self) -> None:
        # Activation checkpointing → compile → FSDP, in torchtitan's order (lvm/training/parallelize.py).
        # Also called without a trainer (load_from_checkpoint), and again for validate/test after fit.
        if self._parallelized:
            return
        trainer = attached_trainer(self)
        strategy = trainer.strategy if trainer is not None else None
        shard = strategy.shard if isinstance(strategy, FSDP2Strategy) else None
        parallelize(self.model, self.activation_checkpointing, self.compile_options, shard)
        self._parallelized = True

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Read by ThroughputMonitor after the batch: FLOPs of this batch summed over all devices.
        flops_per_token = self.model.config.flops_per_token(batch["input_ids"].shape[1])
        self.flops_per_batch = flops_per_token * tokens_of(batch) * self.trainer.world_size

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["input_ids"])
        loss = next_token_loss(logits, batch["labels"])
        batch_size = batch["input_ids"].shape[0]  # said explicitly: batches also carry non-tensor fields
        # Averaged over ranks (equal batches), so the logged loss is the global batch's, as the original's.
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=True)
        # The rest is only written every log_every_n_steps: skip its cost (an argmax over the
        # vocabulary for every token) on the other steps. The step test is Lightning's own
        # (`should_update_logs`), from public fields: global_step counts the optimizer steps taken.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0 or self.trainer.should_stop:
            self._log_accuracy_and_budget(logits, batch)
        return loss

    def _log_accuracy_and_budget(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        batch_size, seq_len = batch["input_ids"].shape
        self.log("train/acc", token_accuracy(logits, batch["labels"]), batch_size=batch_size, sync_dist=True)
        # From the optimizer step count, so the totals survive a resume; float64 keeps them exact
        # past 2**24 tokens.
        tokens_per_update = tokens_of(batch) * self.trainer.world_size * self.trainer.accumulate_grad_batches
        tokens_seen = (self.global_step + 1) * tokens_per_update
        for name, causal in (("train/flops_spent", False), ("train/flops_spent_causal", True)):
            flops = tokens_seen * self.model.config.flops_per_token(seq_len, causal=causal)
            self.log(name, torch.tensor(flops, dtype=torch.float64), batch_size=batch_size)
        self.log("train/tokens_seen", torch.tensor(tokens_seen, dtype=torch.float64), batch_size=batch_size)

    # -- validation ---------------------------------------------------------------------------------
    def _add_val_sources(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._val_source_index:
                self._val_source_index[name] = len(self.val_source_loss)
                self.val_source_loss.append(MeanMetric().to(self.device))

    def on_validation_epoch_start(self) -> None:
        # Known up front when the datamodule says, so every source has its metric before any batch.
        names = getattr(self.trainer.datamodule, "val_source_names", None)
        if names:
            self._add_val_sources(names)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits, labels = self.model(batch["input_ids"]), batch["labels"]
        token_loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none").view_as(labels)
        self.val_loss.update(token_loss.mean(), weight=labels.numel())
        self.log("val/acc", token_accuracy(logits, labels), sync_dist=True, batch_size=labels.shape[0])
        sources = batch.get("source")
        if sources is not None:
            for name, (loss, n_tokens) in loss_by_source(token_loss, sources).items():
                self._add_val_sources([name])
                self.val_source_loss[self._val_source_index[name]].update(loss, weight=n_tokens)

    def _sync_val_source_names(self) -> None:
        """Give every rank the metrics of every source any rank has seen, so that all ranks compute (a
        collective) the same metrics in the same order and log the same keys."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if torch.distributed.get_world_size() == 1:
            return
        gathered: list[list[str] | None] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, list(self._val_source_index))
        for names in gathered:
            self._add_val_sources(sorted(names or ()))

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()  # token-weighted mean over all ranks
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", torch.exp(loss))
        self._sync_val_source_names()
        for name in sorted(self._val_source_index):
            metric = self.val_source_loss[self._val_source_index[name]]
            with warnings.catch_warnings():
                # A rank that saw no batch of this source still joins the sync; its empty state is expected.
                warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
                source_loss = metric.compute()
            metric.reset()
            # NaN (0/0) means no rank saw this source (e.g. limit_val_batches): the value is the same on
            # every rank, so every rank leaves it out alike.
            if not torch.isnan(source_loss):
                self.log(f"val/loss/{name}", source_loss)
                self.log(f"val/ppl/{name}", torch.exp(source_loss))

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

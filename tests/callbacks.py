"""Callbacks and plugins the tests add to `python -m lvm.train` through Hydra (`+callbacks.<name>._target_=...`)."""

import hashlib
import io
import os
import signal

import pytorch_lightning as pl
import torch

from lvm.training.checkpoint_io import AtomicCheckpointIO


class RecordBatches(pl.Callback):
    """Appends "<global step> <sha1 of the batch's input_ids>" to `path` before every training step."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        digest = hashlib.sha1(batch["input_ids"].cpu().numpy().tobytes()).hexdigest()
        with open(self.path, "a") as f:
            f.write(f"{trainer.global_step} {digest}\n")
            f.flush()


class KillAtStep(pl.Callback):
    """SIGKILLs its own process when training reaches `step`: no handler, no cleanup, like an OOM kill."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillMidSave(AtomicCheckpointIO):
    """The atomic checkpoint writer, SIGKILLed halfway through writing its `at_save`-th checkpoint
    (a plugin: `trainer.plugins=[{_target_:tests.callbacks.KillMidSave,at_save:N}]`)."""

    def __init__(self, at_save: int) -> None:
        super().__init__()
        self.at_save, self.saves = at_save, 0

    def write(self, checkpoint, f) -> None:
        self.saves += 1
        if self.saves < self.at_save:
            return super().write(checkpoint, f)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

"""Callbacks the tests add to `python -m lvm.train` through Hydra (`+callbacks.<name>._target_=...`)."""

import hashlib
import os
import signal

import pytorch_lightning as pl


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

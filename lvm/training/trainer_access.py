"""The Trainer a LightningModule runs under, through Lightning's public API only (`module.trainer` raises
when none is attached, e.g. in `load_from_checkpoint` or a bare forward)."""

from __future__ import annotations

import pytorch_lightning as pl


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """`module.trainer`, or None when the module is not attached to one."""
    try:
        return module.trainer
    except RuntimeError:
        return None

"""Checkpoints that are either whole or absent: a kill during a save leaves the previous one loadable.

Lightning's own `TorchCheckpointIO` serialises into memory and moves a file from the system temp dir;
when that dir is on another file system (node-local /tmp, checkpoints on shared storage) the move is
a copy, and a kill mid-copy leaves a truncated `last.ckpt`. Here the temp file sits next to the target
and `os.replace` swaps it in, which POSIX makes atomic on one file system.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO


def _stale_temporaries(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.*.tmp"))


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` to a hidden temp file beside the target, fsync, then `os.replace` onto it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in _stale_temporaries(path):  # left by a save that was killed
            stale.unlink(missing_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                self.write(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def write(self, checkpoint: dict[str, Any], f: IO[bytes]) -> None:
        """Serialise one checkpoint into an open file (a seam for tests that kill mid-write)."""
        torch.save(checkpoint, f)

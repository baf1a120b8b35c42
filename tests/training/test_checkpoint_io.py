"""Atomic checkpoint writes: a failure or a kill during a save leaves the previous checkpoint whole."""

import pytest
import torch

from lvm.training.checkpoint_io import AtomicCheckpointIO


class FailingWrite(AtomicCheckpointIO):
    def write(self, checkpoint, f) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")


def test_save_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    AtomicCheckpointIO().save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["global_step"] == 2 and torch.equal(loaded["w"], torch.zeros(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_failed_save_keeps_the_previous_checkpoint_and_cleans_up(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    with pytest.raises(OSError, match="disk full"):
        FailingWrite().save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_temporary_left_by_a_killed_save_is_removed_by_the_next(tmp_path):
    path = tmp_path / "last.ckpt"
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"truncated")
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]

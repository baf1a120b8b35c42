"""A tiny LVM saved as lvm.train saves it, sized for the 32-px test VQGAN (64 codes per image)."""

from pathlib import Path

import pytest
import torch

from lvm.model import LLaMA, ModelConfig

TINY_LVM = ModelConfig(
    name="tiny",
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=2,
    vocab_size=80,
    max_seq_len=6 * 64,
    init_std=0.3,
)


def save_lightning_checkpoint(model: LLaMA, path: Path) -> Path:
    """The fields of an lvm.train checkpoint that loading reads: weights and model dimensions."""
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model_config": model.config.to_dict()},
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def tiny_lvm_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_lightning_checkpoint(LLaMA(TINY_LVM), tmp_path_factory.mktemp("lvm") / "last.ckpt")

import math
from functools import partial

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lvm.lit_module import LVMLitModule, next_token_loss
from lvm.model import ModelConfig
from lvm.optim import build_adamw, warmup_cosine_scheduler

CONFIG = ModelConfig(name="tiny", hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=48)


class RepeatingImages(Dataset):
    """Sequences of 4-token 'images' that repeat: a model that learns to copy the previous one wins."""

    def __init__(self, n: int, seq_len: int = 32):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(n):
            image = torch.randint(0, 32, (4,), generator=g)
            window = image.repeat(seq_len // 4 + 1)[: seq_len + 1]
            self.items.append({"input_ids": window[:-1], "labels": window[1:]})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def test_next_token_loss_matches_manual_cross_entropy():
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    loss, acc = next_token_loss(logits, labels)
    manual = -torch.log_softmax(logits, -1).gather(-1, labels[..., None]).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    assert acc == (logits.argmax(-1) == labels).float().mean()


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_training_steps_lower_the_loss_and_checkpoint_reloads(tmp_path):
    torch.manual_seed(0)
    module = LVMLitModule(
        CONFIG,
        optimizer=partial(build_adamw, lr=3e-3, weight_decay=0.0),
        scheduler=partial(warmup_cosine_scheduler, warmup_steps=5, decay_steps=60, end_lr=3e-4),
    )
    recorder = LossRecorder()
    trainer = pl.Trainer(
        max_steps=60, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[recorder], limit_val_batches=2, val_check_interval=30, check_val_every_n_epoch=None, num_sanity_val_steps=0,
    )
    loader = DataLoader(RepeatingImages(64), batch_size=8, shuffle=True)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=DataLoader(RepeatingImages(8), batch_size=4))

    first, last = sum(recorder.losses[:5]) / 5, sum(recorder.losses[-5:]) / 5
    assert first > 3.0  # ≈ ln(48) at init
    # below log(32), the best loss without using context: the model learned to copy earlier images
    assert last < math.log(32) - 0.4 < first, (first, last)
    assert trainer.callback_metrics["val/ppl"] == torch.exp(trainer.callback_metrics["val/loss"])
    assert trainer.lr_scheduler_configs[0].interval == "step"

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # plain data only: no pickled config objects
    assert checkpoint["hyper_parameters"]["model_config"]["hidden_size"] == 32
    reloaded = LVMLitModule.load_from_checkpoint(path, weights_only=True)
    batch = RepeatingImages(2)[0]["input_ids"][None]
    assert torch.equal(reloaded(batch), module(batch))


def test_configure_optimizers_without_factory_is_a_clear_error():
    module = LVMLitModule(CONFIG)
    try:
        module.configure_optimizers()
    except ValueError as error:
        assert "without an optimizer factory" in str(error)
    else:
        raise AssertionError("expected a ValueError")

"""`python -m lvm.train [overrides]`: train an LVM from composed Hydra config (conf/train.yaml).

Examples:
    python -m lvm.train experiment=demo
    python -m lvm.train experiment=demo run_name=myrun ckpt_path=last        # resume in place
    python -m lvm.train -m experiment=demo optimizer.lr=1e-3,3e-3             # multirun sweep
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from lvm.core.atomic_files import resolve_directory
from lvm.core.errors import refuse_unsafe_pickles, report_user_errors
from lvm.interop.pretrained import load_pretrained_into
from lvm.model.config import ModelConfig
from lvm.training.lit_module import LVMLitModule


def check_sequence_fits(seq_len: int, tokens_per_image: int, model_config: ModelConfig) -> None:
    """Refuse a config whose sequences are not whole images or do not fit the model."""
    if seq_len % tokens_per_image:
        raise ValueError(
            f"data.seq_len {seq_len} is not a whole number of images of {tokens_per_image} tokens "
            f"(data.tokens_per_image)"
        )
    if seq_len > model_config.max_seq_len:
        raise ValueError(f"data.seq_len {seq_len} exceeds model.max_seq_len {model_config.max_seq_len}")


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed → instantiate data, module, callbacks, loggers, trainer (each from its config) → fit → final metrics."""
    model_config: ModelConfig = instantiate(cfg.model)
    check_sequence_fits(cfg.data.seq_len, cfg.data.tokens_per_image, model_config)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    module: LVMLitModule = instantiate(cfg.module)  # model, optimizer and schedule factories: conf/train.yaml
    if cfg.get("init_from"):
        if cfg.get("ckpt_path"):
            raise ValueError("set either init_from (new run from pretrained weights) or ckpt_path (resume), not both")
        load_pretrained_into(module.model, cfg.init_from)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    ckpt_path = resumed_file = cfg.get("ckpt_path")
    if ckpt_path == "last" and trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
        # A kill between the two renames of a checkpoint-folder swap leaves last.ckpt.old only.
        resumed_file = resolve_directory(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt")
    with refuse_unsafe_pickles(resumed_file):  # Lightning reads it with weights_only=True
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    skipped = getattr(datamodule, "skipped_shards", 0)
    if skipped:  # each one was named in a CorruptShardWarning when it was met
        print(
            f"data: skipped {skipped} unreadable shard(s) on rank {trainer.global_rank} (data.strict=true refuses them)"
        )
    metrics["data/skipped_shards"] = float(skipped)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

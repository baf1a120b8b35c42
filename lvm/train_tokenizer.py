"""`python -m lvm.train_tokenizer [overrides]`: train the VQGAN tokenizer on image files
(conf/train_tokenizer.yaml), then save it in the open-muse layout and print its validation metrics.

Examples:
    python -m lvm.train_tokenizer experiment=tokenizer_tiny data.source=images/
    python -m lvm.train_tokenizer experiment=tokenizer_tiny data.source=list.txt run_name=a ckpt_path=last  # resume
    python -m lvm.train_tokenizer experiment=tokenizer_lvm data.source=/data/images \\
        vgg16_weights=/weights/vgg16-397923af.pth    # the LVM-size recipe (GPU, LPIPS + GAN)
"""

from __future__ import annotations

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from lvm.core.errors import refuse_unsafe_pickles, report_user_errors
from lvm.tokenizer.checkpoint import save_vqgan
from lvm.tokenizer.training.image_data import ImageFolderDataModule
from lvm.tokenizer.training.vqgan_module import VQGANLitModule


def train_tokenizer(cfg: DictConfig) -> dict[str, float]:
    """Seed → data, module, callbacks, loggers, trainer → fit (resuming from cfg.ckpt_path) →
    validate → save the VQGAN to cfg.tokenizer_dir → the validation metrics."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule: ImageFolderDataModule = instantiate(cfg.data)
    module: VQGANLitModule = instantiate(cfg.module)  # module.config is ${tokenizer}: a VQGANConfig
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    with refuse_unsafe_pickles(cfg.get("ckpt_path")):  # Lightning reads it with weights_only=True
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {name: float(value) for name, value in trainer.validate(module, datamodule=datamodule)[0].items()}
    if trainer.is_global_zero:
        folder = save_vqgan(module.vqgan, cfg.tokenizer_dir)
        datamodule.skips.report()
        print(
            f"tokenizer saved to {folder} after {trainer.global_step} steps; validation: "
            + ", ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items()))
        )
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_tokenizer")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    metrics = train_tokenizer(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

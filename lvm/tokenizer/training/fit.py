"""Fit a VQGAN on in-memory uint8 images with a Lightning Trainer, for the end-to-end demo.

`fit_tokenizer(train_images, val_images, config, max_steps, ...)` → (trained VQGANModel in eval
mode, {"psnr", "codebook_usage", "code_perplexity"} on val_images).
`reconstruction_psnr(model, images_uint8)` → dB of uint8 images against their encode → decode
round trip, rounded back to uint8 as a saved PNG would be.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset
from torchmetrics.image import PeakSignalNoiseRatio

from lvm.media.images import images_to_tensor
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.codec import BATCH_SIZE, decode_codes, encode_images
from lvm.tokenizer.training.code_usage import CodeUsage
from lvm.tokenizer.training.vqgan_module import VQGANLitModule
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel


class UInt8ImageDataset(Dataset):
    """(N, H, W, 3) uint8 array → items (3, H, W) float32 in [0, 1], randomly mirrored left-right
    when `flip` (a free augmentation: the demo's shapes and photographs have no handedness)."""

    def __init__(self, images: np.ndarray, flip: bool = False) -> None:
        self.images = torch.from_numpy(_check_uint8_images(images, "images"))
        self.flip = flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index].permute(2, 0, 1).float().div_(255.0)
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


def _check_uint8_images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name}: expected a uint8 array (N, H, W, 3), got {images.dtype} {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: no images")
    return np.ascontiguousarray(images)


@torch.no_grad()
def _round_trip(model: VQGANModel, images: np.ndarray, batch_size: int):
    """Yield (original uint8-valued float, reconstruction rounded to uint8 values, codes) per chunk."""
    for start in range(0, images.shape[0], batch_size):
        chunk = images_to_tensor(images[start : start + batch_size])
        codes = encode_images(model, chunk, batch_size=batch_size)
        decoded = decode_codes(model, codes, batch_size=batch_size)  # clamped to [0, 1]
        yield chunk.mul(255.0).round_(), decoded.mul(255.0).round_(), codes


def reconstruction_psnr(model: VQGANModel, images_uint8: np.ndarray, batch_size: int = BATCH_SIZE) -> float:
    """PSNR in dB (data range 255) of (N, H, W, 3) uint8 images against encode → decode → uint8,
    over all pixels of all images (one MSE, not a mean of per-image PSNRs)."""
    return evaluate_tokenizer(model, images_uint8, batch_size)["psnr"]


def tokenizer_round_trip(
    model: VQGANModel, images_uint8: np.ndarray, batch_size: int = BATCH_SIZE
) -> tuple[float, torch.Tensor]:
    """(PSNR in dB of the uint8 round trip, the codes (N, tokens per image)) of (N, H, W, 3) uint8 images: one
    encode pass for callers that measure more than the PSNR on the same images."""
    images = _check_uint8_images(images_uint8, "images_uint8")
    psnr = PeakSignalNoiseRatio(data_range=255.0)
    all_codes = []
    for original, reconstruction, codes in _round_trip(model, images, batch_size):
        psnr.update(reconstruction, original)
        all_codes.append(codes)
    return float(psnr.compute()), torch.cat(all_codes)


def evaluate_tokenizer(model: VQGANModel, images_uint8: np.ndarray, batch_size: int = BATCH_SIZE) -> dict[str, float]:
    """{"psnr" (dB, uint8 round trip), "codebook_usage" (fraction of codes used), "code_perplexity"}."""
    psnr, codes = tokenizer_round_trip(model, images_uint8, batch_size)
    usage = CodeUsage(model.config.num_embeddings)
    usage.update(codes)
    codebook_usage, perplexity = usage.compute()
    return {"psnr": psnr, "codebook_usage": codebook_usage, "code_perplexity": perplexity}


def encoder_code_usage(
    model: VQGANModel, images_uint8: np.ndarray, batch_size: int = BATCH_SIZE
) -> tuple[float, float]:
    """(fraction of the codebook used, code perplexity) over (N, H, W, 3) uint8 images, from the encoder
    alone: the decoder, the costly half of a round trip, is not needed to know which codes are picked."""
    images = _check_uint8_images(images_uint8, "images_uint8")
    usage = CodeUsage(model.config.num_embeddings)
    usage.update(encode_images(model, images_to_tensor(images), batch_size=batch_size))
    return usage.compute()


def _config_difference(found: VQGANConfig, expected: VQGANConfig) -> str:
    found, expected = found.to_dict(), expected.to_dict()
    return ", ".join(f"{k}: {found.get(k)!r} vs {expected.get(k)!r}" for k in expected if found.get(k) != expected[k])


def load_start(vqgan: VQGANModel, init_from: str | os.PathLike, refit_codebook: bool = False) -> None:
    """Load the open-muse folder `init_from` into `vqgan`, which must have the same architecture. With
    `refit_codebook` (codebook_init="kmeans": the codebook is set from the latents once quantisation starts)
    its codebook may differ in size: everything but the codebook is loaded, so a trained tokenizer can be
    given fewer codes (README, "The demo tokenizer")."""
    start = load_vqgan(init_from)  # fp32
    found, wanted = start.config.to_dict(), vqgan.config.to_dict()
    if refit_codebook:
        found["num_embeddings"] = wanted["num_embeddings"]
    if found != wanted:
        raise ValueError(
            f"init_from: {init_from}: its config.json differs from the VQGAN config being trained "
            f"({_config_difference(start.config, vqgan.config)}); start from a folder of the same architecture"
            + ("" if refit_codebook else " (only num_embeddings may differ, with codebook_init=kmeans)")
        )
    state = start.state_dict()
    if start.config.num_embeddings != vqgan.config.num_embeddings:
        state["quantize.embedding.weight"] = vqgan.quantize.embedding.weight.detach().clone()
    vqgan.load_state_dict(state)


def fit_tokenizer(
    train_images: np.ndarray,
    val_images: np.ndarray,
    config: VQGANConfig | Mapping,
    max_steps: int,
    batch_size: int = 32,
    learning_rate: float = 2e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    default_root_dir: str | os.PathLike = "outputs/tokenizer",
    seed: int = 0,
    logger: bool = True,
    enable_progress_bar: bool = True,
    dead_code_restart_every: int = 25,
    val_check_interval: int | None = None,
    accelerator: str = "cpu",
    precision: str = "32-true",
    init_from: str | os.PathLike | None = None,
    module_class: type[VQGANLitModule] = VQGANLitModule,
    **module_options,
) -> tuple[VQGANModel, dict[str, float]]:
    """Train a VQGAN on uint8 images (N, R, R, 3), R = config.resolution: from scratch, or, with
    `init_from` (an open-muse folder of the same architecture), from those weights — codebook included
    (pass codebook_init="keep" and quantize_start=0 to keep it as it is; with codebook_init="kmeans" the
    codebook is refitted from the latents at quantize_start and may have another size: `load_start`).

    Runs `max_steps` AdamW steps of `batch_size` images (random left-right flips) with a
    Lightning Trainer logging to TensorBoard under `default_root_dir` (no checkpoints: save the
    returned model with `save_vqgan`). Validates every `val_check_interval` steps (default: four
    times per run). Returns the model in eval mode and its metrics on `val_images`. Other keyword
    arguments go to `VQGANLitModule` (e.g. quantize_start, codebook_init, lr_decay_steps); `module_class`, a
    subclass of it, trains another network with the same recipe (benchmarks/bench_tokenizer_learning.py).

    `precision` is the Trainer's: "bf16-mixed" runs the convolutions in bfloat16 (the quantizer's distances
    stay fp32), about twice as fast on CPUs with bf16 units (README, "The demo tokenizer"); evaluation and the
    returned model are fp32 either way.

    `betas` default to (0.9, 0.99), not the GAN-style (0.5, 0.9) of VQGANLitModule: without a
    discriminator the latter gave lower PSNR and used 7 % of a 512-code book (against 61 %) after
    400 steps on the demo images.
    """
    if isinstance(config, Mapping):
        config = VQGANConfig(**{k: v for k, v in config.items() if not str(k).startswith("_")})
    train_images = _check_uint8_images(train_images, "train_images")
    val_images = _check_uint8_images(val_images, "val_images")
    for name, images in (("train_images", train_images), ("val_images", val_images)):
        if images.shape[1:3] != (config.resolution, config.resolution):
            raise ValueError(
                f"{name}: images are {images.shape[1]}x{images.shape[2]} but the VQGAN config has "
                f"resolution {config.resolution}; resize them first"
            )
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")

    pl.seed_everything(seed, workers=True, verbose=False)
    module = module_class(
        config.to_dict(),
        learning_rate=learning_rate,
        betas=tuple(betas),
        dead_code_restart_every=dead_code_restart_every,
        **module_options,
    )
    if init_from is not None:
        load_start(module.vqgan, init_from, refit_codebook=module.options.codebook_init == "kmeans")
    batch_size = min(batch_size, train_images.shape[0])
    train_loader = DataLoader(
        UInt8ImageDataset(train_images, flip=True), batch_size=batch_size, shuffle=True, drop_last=True
    )
    val_loader = DataLoader(UInt8ImageDataset(val_images), batch_size=max(batch_size, 64))
    if val_check_interval is None:
        val_check_interval = max(1, max_steps // 4)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=max_steps,
        default_root_dir=str(default_root_dir),
        logger=TensorBoardLogger(str(default_root_dir), name="tokenizer") if logger else False,
        enable_checkpointing=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        # Count validation in steps across epochs: the demo's epochs are a few dozen steps long.
        val_check_interval=min(val_check_interval, max_steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=min(10, max_steps),
    )
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    model = module.vqgan.cpu().eval()
    return model, evaluate_tokenizer(model, val_images)

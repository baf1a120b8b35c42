"""How fast the demo tokenizer learns: the open-muse VQGAN of conf/tokenizer/demo_f8.yaml against a plain
convolutional VQ autoencoder trained by the same recipe on the same images.

    python -m benchmarks.bench_tokenizer_learning                 # 1,500 steps each, fp32
    python -m benchmarks.bench_tokenizer_learning --precision bf16-mixed --steps 3000

Both run through `lvm.tokenizer.training.fit.fit_tokenizer` (batch 16, AdamW, warm-up and cosine schedule,
autoencoder warm-up, k-means codebook init, dead-code restarts, left-right flips) on the demo corpus of seed 1
(the split the shipped weights were trained on), measured on its held-out video frames: only the network
differs. The reference keeps the VQGAN's quantizer (256 codes of 16 dimensions, 8×8 tokens per 64-px image)
and swaps encoder and decoder for ReLU convolutions without normalisation: 4×4 stride-2 convolutions down,
transposed ones up, widths 64 / 128 / 128 — 1.7 M parameters against the VQGAN's 3.2 M. It asks whether
the architecture or the data is what learns slowly (README, "The demo tokenizer", where a scratch loop's
faster plain run is not yet reproduced here). Headline: the reference's held-out MSE over ours after the
same number of steps (above 1.0x: ours learns faster per step; the table's seconds give the per-second
picture). Target 1.0x.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from benchmarks.machine import cpu_name
from data_pipelines.demo_sentences import demo_sentences
from data_pipelines.synthetic import make_demo_corpus
from lvm.demo import corpus_frames
from lvm.tokenizer.training.fit import fit_tokenizer
from lvm.tokenizer.training.vqgan_module import VQGANLitModule
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel, count_parameters

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.0


class PlainEncoder(nn.Sequential):
    """(B, 3, R, R) → (B, z_channels, R/8, R/8): conv3x3, then three times (4×4 stride-2 conv, conv3x3), ReLUs."""

    def __init__(self, z_channels: int, width: int) -> None:
        layers, channels = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()], width
        for out in (width, 2 * width, 2 * width):
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.ReLU()]
            layers += [nn.Conv2d(out, out, 3, padding=1), nn.ReLU()]
            channels = out
        super().__init__(*layers, nn.Conv2d(channels, z_channels, 1))


class PlainDecoder(nn.Sequential):
    """(B, z_channels, R/8, R/8) → (B, 3, R, R): the encoder mirrored with 4×4 stride-2 transposed convs."""

    def __init__(self, z_channels: int, width: int) -> None:
        layers, channels = [nn.Conv2d(z_channels, 2 * width, 3, padding=1), nn.ReLU()], 2 * width
        for out in (2 * width, width, width):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), nn.ReLU()]
            channels = out
        super().__init__(*layers, nn.Conv2d(channels, 3, 3, padding=1))


class PlainVQAutoencoder(VQGANModel):
    """The VQGAN's quantizer and 1×1 convolutions around it, with the plain encoder and decoder (f = 8)."""

    def __init__(self, config: VQGANConfig, width: int = 64) -> None:
        if config.downsample_factor != 8:
            raise ValueError(f"the plain reference is f = 8; the config gives f = {config.downsample_factor}")
        super().__init__(config)
        self.encoder = PlainEncoder(config.z_channels, width)
        self.decoder = PlainDecoder(config.z_channels, width)


class PlainLitModule(VQGANLitModule):
    """VQGANLitModule's recipe, training the plain network instead of the open-muse one."""

    def __init__(self, config, options=None, **option_values) -> None:
        super().__init__(config, options, **option_values)
        self.vqgan = PlainVQAutoencoder(self.vqgan.config)


def demo_images(
    out_dir: Path, n_videos: int, val_videos: int, n_images: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(training images: every image of the train split's sentences, held-out video frames) of a demo corpus."""
    # Held-out video frames only: conf/demo.yaml's 16 videos give 256 (the photo crops are not measured here).
    corpus = make_demo_corpus(
        out_dir, n_videos=n_videos, n_val_videos=val_videos, n_images=n_images, n_val_images=0, seed=seed
    )
    train = corpus_frames(demo_sentences(corpus, "train", 8, seed=seed))
    val = corpus_frames({"video": demo_sentences(corpus, "val", 8, seed=seed)["video"]})
    return train, val


def train(module_class, train_images, val_images, config, args, out_dir: Path) -> tuple[VQGANModel, float, float]:
    """(model, held-out PSNR in dB, seconds) of one fit_tokenizer run."""
    started = time.perf_counter()
    model, metrics = fit_tokenizer(
        train_images,
        val_images,
        config,
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        default_root_dir=out_dir,
        seed=args.seed,
        logger=False,
        enable_progress_bar=False,
        val_check_interval=args.steps,
        precision=args.precision,
        quantize_start=min(args.quantize_start, args.steps - 1),
        kmeans_batches=min(32, max(1, args.quantize_start)),
        module_class=module_class,
    )
    return model, metrics["psnr"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (conf/demo.yaml's)")
    parser.add_argument("--quantize-start", type=int, default=250, help="autoencoder warm-up steps")
    parser.add_argument("--precision", default="32-true", help="Trainer precision, e.g. bf16-mixed")
    parser.add_argument("--videos", type=int, default=160, help="training videos of the corpus")
    parser.add_argument("--images", type=int, default=400, help="training photo crops of the corpus")
    parser.add_argument("--val-videos", type=int, default=16, help="held-out videos (16 frames each)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    yaml = OmegaConf.load(ROOT / "conf" / "tokenizer" / "demo_f8.yaml")
    config = VQGANConfig(**{k: v for k, v in yaml.items() if not k.startswith("_")})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        train_images, val_images = demo_images(corpus, args.videos, args.val_videos, args.images, args.seed)
        networks = (("plain conv VQ-AE (reference)", PlainLitModule), ("open-muse VQGAN (ours)", VQGANLitModule))
        for name, module_class in networks:
            model, psnr, seconds = train(module_class, train_images, val_images, config, args, Path(tmp) / "run")
            rows.append((name, count_parameters(model), psnr, seconds))

    print(f"\n{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {datetime.date.today().isoformat()}")
    print(
        f"{len(train_images):,} training images, {len(val_images)} held-out video frames (seed {args.seed}), "
        f"{args.steps:,} steps of batch {args.batch_size}, {args.precision}\n"
    )
    print("| network | parameters | held-out video PSNR | seconds | s/step |")
    print("|---|---:|---:|---:|---:|")
    for name, parameters, psnr, seconds in rows:
        print(f"| {name} | {parameters / 1e6:.1f} M | {psnr:.2f} dB | {seconds:.0f} | {seconds / args.steps:.3f} |")
    (_, _, reference_psnr, _), (_, _, ours_psnr, _) = rows
    ratio = 10 ** ((ours_psnr - reference_psnr) / 10)  # reference MSE / our MSE
    print(f"\nbench_tokenizer_learning: {ratio:.2f}x vs plain conv VQ-AE (target {TARGET:.1f}x)")


if __name__ == "__main__":
    main()

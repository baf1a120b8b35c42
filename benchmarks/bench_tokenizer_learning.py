"""How fast the demo tokenizer learns: the open-muse VQGAN of conf/tokenizer/demo_f8.yaml against a plain
convolutional VQ autoencoder trained by the same recipe on the same images.

    python -m benchmarks.bench_tokenizer_learning                 # 1,500 steps each, fp32
    python -m benchmarks.bench_tokenizer_learning --precision bf16-mixed --steps 3000
    python -m benchmarks.bench_tokenizer_learning --set codebook_weight=0.25 --tokenizer commitment_cost=4

Both run through `lvm.tokenizer.training.fit.fit_tokenizer` with conf/demo.yaml's `tokenizer_training` recipe
(AdamW, warm-up and cosine schedule over the run, plain MSE, autoencoder warm-up, k-means codebook init, dead-code
restarts, left-right flips; `--set KEY=VALUE` changes one of its fields, `--tokenizer KEY=VALUE` one field of the
VQGAN config) on the demo corpus of seed 1 (the split the shipped weights were trained on), measured on its
held-out video frames: only the network differs. The reference keeps the VQGAN's quantizer (256 codes of 16
dimensions, 8×8 tokens per 64-px image) and swaps encoder and decoder for ReLU convolutions without
normalisation: 4×4 stride-2 convolutions down, transposed ones up, widths 64 / 128 / 128 — 1.7 M parameters
against the VQGAN's 3.2 M. It asks whether the architecture or the recipe is what learns slowly (README, "The
demo tokenizer"). Headline: the reference's held-out MSE over ours after the same number of steps (above 1.0x:
ours learns faster per step; the table's seconds give the per-second picture). Target 1.0x.
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
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

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


class NoGroupNormLitModule(VQGANLitModule):
    """Ablation: the open-muse VQGAN with every GroupNorm replaced by the identity (not loadable as open-muse)."""

    def __init__(self, config, options=None, **option_values) -> None:
        super().__init__(config, options, **option_values)
        for module in list(self.vqgan.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.GroupNorm):
                    setattr(module, name, nn.Identity())


NETWORKS = {
    "reference": ("plain conv VQ-AE (reference)", PlainLitModule),
    "ours": ("open-muse VQGAN (ours)", VQGANLitModule),
    "ours-without-groupnorm": ("open-muse VQGAN, GroupNorms removed (ablation)", NoGroupNormLitModule),
}


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


def demo_recipe(args: argparse.Namespace) -> dict:
    """conf/demo.yaml's `tokenizer_training` as fit_tokenizer keywords, sized to this run (`--steps`,
    `--batch-size`, `--precision`, `--quantize-start`), with the `--set` overrides applied last."""
    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "demo.yaml").tokenizer_training, resolve=True)
    for key in ("enabled", "init_from", "val_check_interval"):  # the demo's switches, not training options
        recipe.pop(key)
    quantize_start = min(args.quantize_start, args.steps - 1)
    recipe |= {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "lr_decay_steps": args.steps,
        "lr_warmup_steps": min(recipe["lr_warmup_steps"], args.steps),
        "quantize_start": quantize_start,
        "kmeans_batches": min(recipe["kmeans_batches"], max(1, quantize_start)),
    }
    return recipe | parse_assignments(args.set)


def parse_assignments(items: list[str]) -> dict:
    """["key=value", ...] → {key: value}, values typed as Hydra's command line types them."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(items))


def train(module_class, train_images, val_images, config, recipe: dict, seed: int, out_dir: Path):
    """(model, held-out metrics (`evaluate_tokenizer`'s psnr, codebook_usage, code_perplexity), seconds) of one
    fit_tokenizer run."""
    started = time.perf_counter()
    model, metrics = fit_tokenizer(
        train_images,
        val_images,
        config,
        default_root_dir=out_dir,
        seed=seed,
        logger=False,
        enable_progress_bar=False,
        val_check_interval=recipe["max_steps"],
        module_class=module_class,
        **recipe,
    )
    return model, metrics, time.perf_counter() - started


@torch.no_grad()
def forward_gflop(model: nn.Module, resolution: int) -> float:
    """Floating-point operations of one image's encode-quantise-decode, counted by torch's FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, resolution, resolution))
    return counter.get_total_flops() / 1e9


def settings(argv: list[str] | None = None) -> tuple[argparse.Namespace, VQGANConfig, dict]:
    """(command-line arguments, the VQGAN config with `--tokenizer` applied, the training recipe)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quantize-start", type=int, default=250, help="autoencoder warm-up steps")
    parser.add_argument("--precision", default="32-true", help="Trainer precision, e.g. bf16-mixed")
    parser.add_argument("--videos", type=int, default=160, help="training videos of the corpus")
    parser.add_argument("--images", type=int, default=400, help="training photo crops of the corpus")
    parser.add_argument("--val-videos", type=int, default=16, help="held-out videos (16 frames each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--networks", nargs="+", choices=sorted(NETWORKS), default=["reference", "ours"], help="the rows to train"
    )
    for flag, what in (("--set", "conf/demo.yaml tokenizer_training fields"), ("--tokenizer", "VQGAN config fields")):
        parser.add_argument(flag, action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=what)
    args = parser.parse_args(argv)

    # As the demo builds it (`instantiate(cfg.tokenizer)`), with the --tokenizer fields merged in first.
    shipped = OmegaConf.load(ROOT / "conf" / "tokenizer" / "demo_f8.yaml")
    config = instantiate(OmegaConf.merge(shipped, OmegaConf.from_dotlist(args.tokenizer)))
    recipe = demo_recipe(args)
    return args, config, recipe


def main() -> None:
    args, config, recipe = settings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        train_images, val_images = demo_images(corpus, args.videos, args.val_videos, args.images, args.seed)
        for name, module_class in (NETWORKS[key] for key in args.networks):
            run_dir = Path(tmp) / "run"
            model, metrics, seconds = train(module_class, train_images, val_images, config, recipe, args.seed, run_dir)
            rows.append((name, count_parameters(model), forward_gflop(model, config.resolution), metrics, seconds))

    print(f"\n{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {datetime.date.today().isoformat()}")
    print(
        f"{len(train_images):,} training images, {len(val_images)} held-out video frames (seed {args.seed}), "
        f"{args.steps:,} steps of batch {args.batch_size}, {args.precision}, conf/demo.yaml's recipe"
        + "".join(f", {item}" for item in args.set + args.tokenizer)
        + "\n"
    )
    print(
        "| network | parameters | GFLOP per image (forward) | held-out video PSNR | codebook usage (perplexity) "
        "| seconds | s/step |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, parameters, gflop, metrics, seconds in rows:
        usage = f"{metrics['codebook_usage']:.0%} ({metrics['code_perplexity']:.0f})"
        print(
            f"| {name} | {parameters / 1e6:.1f} M | {gflop:.2f} | {metrics['psnr']:.2f} dB | {usage} | {seconds:.0f} | "
            f"{seconds / args.steps:.3f} |"
        )
    if not {"reference", "ours"} <= set(args.networks):
        return  # the headline needs both
    psnr_of = {key: row[3]["psnr"] for key, row in zip(args.networks, rows)}
    reference_psnr, ours_psnr = psnr_of["reference"], psnr_of["ours"]
    ratio = 10 ** ((ours_psnr - reference_psnr) / 10)  # reference MSE / our MSE
    print(f"\nbench_tokenizer_learning: {ratio:.2f}x vs plain conv VQ-AE (target {TARGET:.1f}x)")


if __name__ == "__main__":
    main()

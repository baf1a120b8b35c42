"""Tiny VQGAN configurations shared by the tokenizer tests (32 px, a few hundred k parameters) and
random LPIPS weight files."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lvm.tokenizer.training.perceptual import LPIPS_CHANNELS, vgg16_features
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel


def tiny_config(**overrides) -> VQGANConfig:
    """32 px, f = 4 (8×8 = 64 codes), 64 codes of dim 8. Attention at 16 px: the encoder level there
    holds one attention block (skipped by open-muse's quirk), the decoder level two (run)."""
    fields = dict(
        resolution=32,
        num_channels=3,
        hidden_channels=32,
        channel_mult=(1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(16,),
        no_attn_mid_block=False,
        z_channels=32,
        num_embeddings=64,
        quantized_embed_dim=8,
        dropout=0.0,
        resample_with_conv=True,
        commitment_cost=0.25,
    )
    fields.update(overrides)
    return VQGANConfig(**fields)


@pytest.fixture
def config() -> VQGANConfig:
    return tiny_config()


@pytest.fixture
def model(config) -> VQGANModel:
    torch.manual_seed(0)
    model = VQGANModel(config).eval()
    # Spread the codebook over the latents' scale so many codes are in use (the uniform(±1/K)
    # init maps almost every latent to a handful of codes).
    with torch.no_grad():
        model.quantize.embedding.weight.normal_(0.0, 0.5)
    return model


@pytest.fixture
def images(config) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, config.resolution, config.resolution, generator=generator)


@pytest.fixture
def make_config():
    """`make_config(**overrides)` → the tiny config with some fields changed."""
    return tiny_config


def write_random_lpips_files(folder: Path, suffix: str = ".pth", seed: int = 0) -> tuple[Path, Path]:
    """(VGG16 weights in torchvision's format, incl. a classifier key; lpips VGG heads) with random
    values, written to `folder` as torch files or, with suffix ".safetensors", safetensors files."""
    torch.manual_seed(seed)
    vgg = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(4, 2)  # torchvision's file has the classifier too; ignored
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)}
    vgg_path, heads_path = folder / f"vgg16{suffix}", folder / f"lpips_heads{suffix}"
    for state, path in ((vgg, vgg_path), (heads, heads_path)):
        if suffix == ".safetensors":
            save_file(state, str(path))
        else:
            torch.save(state, path)
    return vgg_path, heads_path


@pytest.fixture
def make_lpips_files():
    """`make_lpips_files(folder, suffix=".pth")` → (vgg path, heads path) of random LPIPS weights."""
    return write_random_lpips_files


@pytest.fixture(scope="session")
def lpips_files(tmp_path_factory) -> tuple[Path, Path]:
    """Random LPIPS weight files (torch format), written once per session."""
    return write_random_lpips_files(tmp_path_factory.mktemp("lpips"))

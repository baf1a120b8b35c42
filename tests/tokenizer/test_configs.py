"""conf/tokenizer/*.yaml instantiate with Hydra into the configs they promise."""

from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel, count_parameters

CONF = Path(__file__).resolve().parents[2] / "conf" / "tokenizer"


def instantiate(name: str) -> VQGANConfig:
    return hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"))


def test_lvm_tokenizer_config_is_the_spec_one():
    config = instantiate("lvm_f16_8192")
    assert isinstance(config, VQGANConfig)
    assert config == VQGANConfig(
        resolution=256,
        num_channels=3,
        hidden_channels=128,
        channel_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16,),
        no_attn_mid_block=False,
        z_channels=256,
        num_embeddings=8192,
        quantized_embed_dim=256,
        dropout=0.0,
        resample_with_conv=True,
        commitment_cost=0.25,
    )
    assert (config.downsample_factor, config.tokens_per_image) == (16, 256)
    with torch.device("meta"):
        assert round(count_parameters(VQGANModel(config)) / 1e6, 1) == 74.0


def test_tiny_config_is_64_px_with_16_tokens():
    config = instantiate("tiny")
    assert (config.resolution, config.downsample_factor, config.tokens_per_image) == (64, 16, 16)
    assert config.num_embeddings <= 1024 and config.num_res_blocks == 1
    model = VQGANModel(config).eval()
    with torch.no_grad():
        codes = model.get_code(torch.rand(2, 3, 64, 64))
    assert codes.shape == (2, 16)


@pytest.mark.parametrize("name", ["lvm_f16_8192", "tiny"])
def test_yaml_fields_are_exactly_the_open_muse_ones(name):
    raw = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert raw.pop("_target_") == "lvm.tokenizer.vqgan.VQGANConfig"
    # every field but our gray_flag, which open-muse configs lack (it defaults to false)
    assert list(raw) == [name for name in VQGANConfig.field_names() if name != "gray_flag"]

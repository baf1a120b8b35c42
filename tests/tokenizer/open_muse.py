"""Open-muse VQGAN checkpoints built without our module: parameter names and shapes from the original's
evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel's
rules alone, written as an open-muse folder (config.json + weights). Shared by the checkpoint tests
and the reference-VQGAN tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

OPEN_MUSE_FIELDS = [
    "resolution",
    "num_channels",
    "hidden_channels",
    "channel_mult",
    "num_res_blocks",
    "attn_resolutions",
    "no_attn_mid_block",
    "z_channels",
    "num_embeddings",
    "quantized_embed_dim",
    "dropout",
    "resample_with_conv",
    "commitment_cost",
]

OPEN_MUSE_CONFIG = {
    "_class_name": "VQGANModel",
    "_version": "0.0.1",
    "resolution": 32,
    "num_channels": 3,
    "hidden_channels": 32,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 2,
    "attn_resolutions": [8],
    "no_attn_mid_block": False,
    "z_channels": 16,
    "num_embeddings": 40,
    "quantized_embed_dim": 12,
    "dropout": 0.0,
    "resample_with_conv": True,
    "commitment_cost": 0.25,
}


def open_muse_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of an open-muse VQGANModel, from the original's
    evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel's rules alone."""
    shapes: dict[str, tuple[int, ...]] = {}
    hidden, mult = cfg["hidden_channels"], cfg["channel_mult"]

    def conv(name, c_in, c_out, k):
        shapes[f"{name}.weight"] = (c_out, c_in, k, k)
        shapes[f"{name}.bias"] = (c_out,)

    def norm(name, c):
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_in, c_out, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(name, c):
        resnet(f"{name}.block_1", c, c)
        if not cfg["no_attn_mid_block"]:
            attn(f"{name}.attn_1", c)
        resnet(f"{name}.block_2", c, c)

    levels = len(mult)
    conv("encoder.conv_in", cfg["num_channels"], hidden, 3)
    for i in range(levels):
        res = cfg["resolution"] // 2**i
        c_in, c_out = hidden * ([1] + list(mult))[i], hidden * mult[i]
        for n in range(cfg["num_res_blocks"]):
            resnet(f"encoder.down.{i}.block.{n}", c_in if n == 0 else c_out, c_out)
            if res in cfg["attn_resolutions"]:
                attn(f"encoder.down.{i}.attn.{n}", c_out)
        if i != levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", c_out, c_out, 3)
    top = hidden * mult[-1]
    mid("encoder.mid", top)
    norm("encoder.norm_out", top)
    conv("encoder.conv_out", top, cfg["z_channels"], 3)
    conv("quant_conv", cfg["z_channels"], cfg["quantized_embed_dim"], 1)
    shapes["quantize.embedding.weight"] = (cfg["num_embeddings"], cfg["quantized_embed_dim"])
    conv("post_quant_conv", cfg["quantized_embed_dim"], cfg["z_channels"], 1)
    conv("decoder.conv_in", cfg["z_channels"], top, 3)
    mid("decoder.mid", top)
    for i in range(levels):
        res = cfg["resolution"] // 2**i
        c_in, c_out = hidden * (mult[-1] if i == levels - 1 else mult[i + 1]), hidden * mult[i]
        for n in range(cfg["num_res_blocks"] + 1):
            resnet(f"decoder.up.{i}.block.{n}", c_in if n == 0 else c_out, c_out)
            if res in cfg["attn_resolutions"]:
                attn(f"decoder.up.{i}.attn.{n}", c_out)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c_out, c_out, 3)
    norm("decoder.norm_out", hidden * mult[0])
    conv("decoder.conv_out", hidden * mult[0], cfg["num_channels"], 3)
    return shapes


def random_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every parameter ~ N(0, 1): right names and shapes, no care for the activations' scale."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name, shape in open_muse_shapes(cfg).items()}


def write_open_muse_folder(
    folder: Path,
    cfg: dict = OPEN_MUSE_CONFIG,
    edit: Callable[[dict[str, torch.Tensor]], object] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    weights_name: str = "model.safetensors",
) -> dict[str, torch.Tensor]:
    """Write `folder/config.json` and the weights (`random_state(cfg)` unless `state` is given,
    changed in place by `edit`) as safetensors or, for `pytorch_model.bin`, with torch.save as
    open-muse does. Returns the state dict written."""
    state = random_state(cfg) if state is None else state
    if edit is not None:
        edit(state)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    if weights_name.endswith(".safetensors"):
        save_file(state, str(folder / weights_name))
    else:
        torch.save(state, folder / weights_name)
    return state

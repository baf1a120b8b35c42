"""Give a trained VQGAN the gray flag (`VQGANConfig.gray_flag`), exactly and without training.

    python -m lvm.tokenizer.gray_flag SRC_FOLDER DST_FOLDER [--dtype float16]

K codes of dimension D become 2K codes of dimension D + 1: codes i < K keep their vector with flag
-1, codes K + i are their gray twins with flag +1. The new quant_conv row and post_quant_conv
column are zero, so the decoder sees a code and its twin alike and colour images keep their codes
and reconstructions; gray patches take the twins and decode to exact gray (`VQGANModel.decode`).
An open-muse reader that ignores the flag sees z's last channel at 0, equally far from both
halves, and picks the colour code (argmin takes the first): it behaves as the source tokenizer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lvm.tokenizer.checkpoint import load_vqgan, save_vqgan
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel


def add_gray_flag(model: VQGANModel) -> VQGANModel:
    """A gray-flagged copy of `model` (2K codes, D + 1 channels) that encodes colour images alike."""
    if model.config.gray_flag:
        raise ValueError("add_gray_flag: the VQGAN already has a gray flag (config.gray_flag is true)")
    codes, dim = model.config.num_embeddings, model.config.quantized_embed_dim
    config = VQGANConfig(
        **(model.config.to_dict() | {"num_embeddings": 2 * codes, "quantized_embed_dim": dim + 1, "gray_flag": True})
    )
    flagged = VQGANModel(config).to(next(model.parameters()).dtype)
    with torch.no_grad():
        flagged.encoder.load_state_dict(model.encoder.state_dict())
        flagged.decoder.load_state_dict(model.decoder.state_dict())
        flagged.quant_conv.weight.zero_()
        flagged.quant_conv.weight[:dim] = model.quant_conv.weight
        flagged.quant_conv.bias.zero_()
        flagged.quant_conv.bias[:dim] = model.quant_conv.bias
        flagged.post_quant_conv.weight.zero_()
        flagged.post_quant_conv.weight[:, :dim] = model.post_quant_conv.weight
        flagged.post_quant_conv.bias.copy_(model.post_quant_conv.bias)
        codebook = flagged.quantize.embedding.weight  # its flag column was set by VQGANModel
        codebook[:codes, :dim] = model.quantize.embedding.weight
        codebook[codes:, :dim] = model.quantize.embedding.weight
    return flagged.train(model.training)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="open-muse VQGAN folder without a gray flag")
    parser.add_argument("destination", type=Path, help="folder to write (may be the source)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    flagged = add_gray_flag(load_vqgan(args.source))
    out = save_vqgan(flagged, args.destination, dtype=getattr(torch, args.dtype))
    print(f"{out}: {flagged.config.num_embeddings} codes (gray twins from {flagged.config.num_embeddings // 2})")
    return out


if __name__ == "__main__":
    main()

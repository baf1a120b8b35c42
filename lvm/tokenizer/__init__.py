"""The LVM image tokenizer: the open-muse VQGAN, its checkpoint folder, batched encode/decode.

Images are float (B, 3, R, R) in [0, 1] (the original's evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel:
no [-1, 1] normalisation); codes are int64
(B, tokens_per_image) in row-major (h, w) order, values in [0, num_embeddings).
"""

from __future__ import annotations

import torch

from lvm.media.images import load_image, tensor_to_uint8
from lvm.tokenizer.checkpoint import load_vqgan, save_vqgan
from lvm.tokenizer.codec import BATCH_SIZE, decode_codes, encode_images
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel


def encode(model: VQGANModel, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Images (B, 3, R, R) float in [0, 1] → codes (B, tokens_per_image) int64."""
    return encode_images(model, images, batch_size=batch_size)


def decode(model: VQGANModel, codes: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Codes (B, tokens_per_image) → images (B, 3, R, R) float in [0, 1]."""
    return decode_codes(model, codes, batch_size=batch_size)


__all__ = [
    "VQGANConfig",
    "VQGANModel",
    "load_vqgan",
    "save_vqgan",
    "encode",
    "decode",
    "encode_images",
    "decode_codes",
    "load_image",
    "tensor_to_uint8",
]

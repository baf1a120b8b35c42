"""An independent, purely functional forward pass of the open-muse VQGAN, written from the original's
evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel alone.

Nothing here comes from `lvm.tokenizer.vqgan`: every function takes `state`, a plain dict of tensors
with open-muse's parameter names (`encoder.down.0.block.1.norm1.weight`, ...), and `cfg`, the
open-muse `config.json` as a dict, and uses only torch.nn.functional and plain tensor algebra.
Attention is an explicit softmax(q kᵀ · C^-½) v with torch.bmm (not SDPA), the quantizer an explicit
‖z‖² + ‖e‖² − 2 z·e argmin, so that the tests compare the module against a second reading of the
spec rather than against itself.

    encode_codes(state, cfg, images (B, 3, R, R) in [0, 1]) → codes (B, (R/f)²) int64, row-major
    decode_pixels(state, cfg, codes (B, n))                 → images (B, 3, √n·f, √n·f), not clamped
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
NORM_GROUPS = 32
NORM_EPS = 1e-6


def conv(state: dict[str, Tensor], name: str, x: Tensor, stride: int = 1, padding: int | None = None) -> Tensor:
    """`name`.weight/.bias as a conv; 'same' padding (k // 2) unless given."""
    weight = state[f"{name}.weight"]
    if padding is None:
        padding = weight.shape[-1] // 2
    return F.conv2d(x, weight, state[f"{name}.bias"], stride=stride, padding=padding)


def norm(state: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """GroupNorm with 32 groups, eps 1e-6, affine from `name`.weight/.bias."""
    return F.group_norm(x, NORM_GROUPS, state[f"{name}.weight"], state[f"{name}.bias"], eps=NORM_EPS)


def resnet_block(state: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """norm1 → SiLU → conv1 → norm2 → SiLU → (dropout: identity at inference) → conv2, plus the
    input, through the 1×1 nin_shortcut when the width changes."""
    h = conv(state, f"{name}.conv1", F.silu(norm(state, f"{name}.norm1", x)))
    h = conv(state, f"{name}.conv2", F.silu(norm(state, f"{name}.norm2", h)))
    if h.shape[1] != x.shape[1]:
        x = conv(state, f"{name}.nin_shortcut", x)
    return x + h


def attn_block(state: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """Single-head softmax attention over the H·W positions, scores scaled by C^-½, then proj_out
    and the residual."""
    b, c, height, width = x.shape
    h = norm(state, f"{name}.norm", x)
    q = conv(state, f"{name}.q", h).reshape(b, c, height * width).permute(0, 2, 1)  # (B, N, C)
    k = conv(state, f"{name}.k", h).reshape(b, c, height * width)  # (B, C, N)
    v = conv(state, f"{name}.v", h).reshape(b, c, height * width)  # (B, C, N)
    weights = torch.bmm(q, k) * (c**-0.5)  # (B, N query, N key)
    weights = torch.softmax(weights, dim=2)
    out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, height, width)  # Σ_key v · w
    return x + conv(state, f"{name}.proj_out", out)


def downsample(state: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """Zero-pad right and bottom by one, then a 3×3 stride-2 conv with no padding."""
    return conv(state, f"{name}.conv", F.pad(x, (0, 1, 0, 1), value=0.0), stride=2, padding=0)


def upsample(state: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """Nearest-neighbour ×2, then a 3×3 conv."""
    return conv(state, f"{name}.conv", F.interpolate(x, scale_factor=2.0, mode="nearest"))


def level(state: dict[str, Tensor], cfg: dict, prefix: str, x: Tensor, n_blocks: int, resolution: int) -> Tensor:
    """The resnet blocks of one level, each followed by its attention block at attention
    resolutions — but only when the level holds more than one (open-muse's quirk: a lone
    attention block is in the weights and skipped)."""
    n_attn = n_blocks if resolution in cfg["attn_resolutions"] else 0
    for n in range(n_blocks):
        x = resnet_block(state, f"{prefix}.block.{n}", x)
        if n_attn > 1:
            x = attn_block(state, f"{prefix}.attn.{n}", x)
    return x


def mid(state: dict[str, Tensor], cfg: dict, prefix: str, x: Tensor) -> Tensor:
    """block_1 → attn_1 (unless no_attn_mid_block) → block_2."""
    x = resnet_block(state, f"{prefix}.block_1", x)
    if not cfg.get("no_attn_mid_block", False):
        x = attn_block(state, f"{prefix}.attn_1", x)
    return resnet_block(state, f"{prefix}.block_2", x)


def _check(cfg: dict) -> None:
    # Spec §6 only describes the conv resampling; refuse what this reference does not implement.
    if not cfg.get("resample_with_conv", True):
        raise NotImplementedError("reference VQGAN: resample_with_conv=false is not implemented")


def encoder(state: dict[str, Tensor], cfg: dict, x: Tensor) -> Tensor:
    """(B, 3, R, R) → (B, z_channels, R/f, R/f)."""
    _check(cfg)
    levels = len(cfg["channel_mult"])
    h = conv(state, "encoder.conv_in", x)
    for i in range(levels):
        h = level(state, cfg, f"encoder.down.{i}", h, cfg["num_res_blocks"], cfg["resolution"] // 2**i)
        if i != levels - 1:
            h = downsample(state, f"encoder.down.{i}.downsample", h)
    h = mid(state, cfg, "encoder.mid", h)
    return conv(state, "encoder.conv_out", F.silu(norm(state, "encoder.norm_out", h)))


def decoder(state: dict[str, Tensor], cfg: dict, z: Tensor) -> Tensor:
    """(B, z_channels, h, w) → (B, 3, h·f, w·f); levels run from the last to the first."""
    _check(cfg)
    levels = len(cfg["channel_mult"])
    h = mid(state, cfg, "decoder.mid", conv(state, "decoder.conv_in", z))
    for i in reversed(range(levels)):
        h = level(state, cfg, f"decoder.up.{i}", h, cfg["num_res_blocks"] + 1, cfg["resolution"] // 2**i)
        if i != 0:
            h = upsample(state, f"decoder.up.{i}.upsample", h)
    return conv(state, "decoder.conv_out", F.silu(norm(state, "decoder.norm_out", h)))


def encode_latents(state: dict[str, Tensor], cfg: dict, images: Tensor) -> Tensor:
    """Images (B, 3, R, R) in [0, 1] → un-quantised latents (B, D, R/f, R/f) (encoder, quant_conv)."""
    return conv(state, "quant_conv", encoder(state, cfg, images))


def code_distances(state: dict[str, Tensor], latents: Tensor) -> Tensor:
    """Latents (B, D, h, w) → squared distances (B·h·w, K) to every codebook row, rows in row-major
    (b, h, w) order, as ‖z‖² + ‖e‖² − 2 z·e."""
    codebook = state["quantize.embedding.weight"]  # (K, D)
    z = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (B·h·w, D)
    return (z**2).sum(dim=1, keepdim=True) + (codebook**2).sum(dim=1)[None, :] - 2.0 * (z @ codebook.T)


def encode_codes(state: dict[str, Tensor], cfg: dict, images: Tensor) -> Tensor:
    """Images (B, 3, R, R) in [0, 1] → codes (B, h·w) int64, row-major (h, w)."""
    latents = encode_latents(state, cfg, images)
    b, _, h, w = latents.shape
    return code_distances(state, latents).argmin(dim=1).reshape(b, h * w)


def decode_pixels(state: dict[str, Tensor], cfg: dict, codes: Tensor) -> Tensor:
    """Codes (B, n), n a square, row-major → images (B, 3, √n·f, √n·f), not clamped."""
    b, n = codes.shape
    side = int(round(n**0.5))
    assert side * side == n, f"{n} codes is not a square grid"
    z_q = state["quantize.embedding.weight"][codes]  # (B, n, D)
    z_q = z_q.reshape(b, side, side, -1).permute(0, 3, 1, 2)  # (B, D, side, side)
    return decoder(state, cfg, conv(state, "post_quant_conv", z_q))

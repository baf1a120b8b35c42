"""The open-muse VQGAN (taming-transformers architecture), the LVM image tokenizer.

Read top to bottom: config, the four building blocks (ResnetBlock, AttnBlock, Downsample,
Upsample), the level blocks, Encoder, Decoder, VectorQuantizer, VQGANModel.

Module attribute names follow open-muse's parameter names exactly (`encoder.down.0.block.1.norm1`,
`encoder.mid.attn_1.q`, `quantize.embedding`, `decoder.up.4.upsample.conv`, ...) so an open-muse
state dict loads with no renaming. Images enter as [0, 1] RGB NCHW (no [-1, 1] normalisation, as in
the original); codes leave as (B, h*w) in row-major (h, w) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

GROUPNORM_GROUPS = 32
GROUPNORM_EPS = 1e-6


@dataclass
class VQGANConfig:
    """Hyper-parameters of the VQGAN, with open-muse's `config.json` field names and defaults
    set to the LVM tokenizer (256 px, f = 16, 8192 codes)."""

    resolution: int = 256
    num_channels: int = 3
    hidden_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    no_attn_mid_block: bool = False
    z_channels: int = 256
    num_embeddings: int = 8192
    quantized_embed_dim: int = 256
    dropout: float = 0.0
    resample_with_conv: bool = True
    commitment_cost: float = 0.25
    # Our extension (open-muse has no such field and ignores it): the last latent channel is a gray
    # flag, see `VQGANModel` and `lvm.tokenizer.gray_flag`.
    gray_flag: bool = False

    def __post_init__(self) -> None:
        # Hydra hands over ListConfig and json hands over lists: normalise to plain tuples of ints
        # so the config is hashable, comparable and serialises the same way whatever built it.
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        for name in (
            "resolution",
            "num_channels",
            "hidden_channels",
            "num_res_blocks",
            "z_channels",
            "num_embeddings",
            "quantized_embed_dim",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"VQGANConfig.{name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        self.no_attn_mid_block = bool(self.no_attn_mid_block)
        self.resample_with_conv = bool(self.resample_with_conv)
        self.gray_flag = bool(self.gray_flag)
        self.dropout = float(self.dropout)
        self.commitment_cost = float(self.commitment_cost)
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(
                f"VQGANConfig.channel_mult must be a non-empty list of positive integers, got {list(self.channel_mult)}"
            )
        # GroupNorm(32) runs on every level's width, on the mid width and on z's consumers.
        for width in {self.hidden_channels * m for m in self.channel_mult}:
            if width % GROUPNORM_GROUPS:
                raise ValueError(
                    f"VQGANConfig: hidden_channels * channel_mult gives a width of {width}, not a multiple "
                    f"of {GROUPNORM_GROUPS} (GroupNorm groups); got hidden_channels={self.hidden_channels}, "
                    f"channel_mult={list(self.channel_mult)}"
                )
        if self.gray_flag and (self.num_embeddings % 2 or self.quantized_embed_dim < 2):
            raise ValueError(
                "VQGANConfig.gray_flag needs an even num_embeddings (colour codes, then their gray twins) "
                f"and quantized_embed_dim >= 2 (the last channel is the flag); got num_embeddings="
                f"{self.num_embeddings}, quantized_embed_dim={self.quantized_embed_dim}"
            )
        if self.resolution % self.downsample_factor:
            raise ValueError(
                f"VQGANConfig.resolution={self.resolution} is not divisible by the downsampling "
                f"factor {self.downsample_factor} = 2**(len(channel_mult) - 1)"
            )

    @property
    def num_resolutions(self) -> int:
        """Number of encoder/decoder levels."""
        return len(self.channel_mult)

    @property
    def downsample_factor(self) -> int:
        """Side of the image patch that one code covers: 2**(levels - 1)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the code grid."""
        return self.resolution // self.downsample_factor

    @property
    def tokens_per_image(self) -> int:
        """Codes per image: (resolution // f)**2."""
        return self.latent_size**2

    @classmethod
    def field_names(cls) -> list[str]:
        """The config.json field names, in declaration order."""
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        """Plain-json dict of the fields (lists, not tuples)."""
        out = {}
        for name in self.field_names():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=GROUPNORM_GROUPS, num_channels=channels, eps=GROUPNORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → conv3x3 → GroupNorm → SiLU → dropout → conv3x3, plus the input (through a
    1x1 `nin_shortcut` when the width changes). (B, C_in, H, W) → (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        residual = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return residual + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions with 1x1-conv q, k, v, proj_out and a
    residual; scores scaled by C**-0.5. (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        # (B, C, H, W) → (B, 1, H*W, C): one head whose dim is the full width.
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        # SDPA's default scale is 1/sqrt(head dim) = C**-0.5, the original's scale; it picks the
        # fused kernel on GPU and the plain softmax(qk^T)v on CPU.
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(attended)


class Downsample(nn.Module):
    """Halve H and W: zero-pad right and bottom by one, conv3x3 stride 2 without padding
    (or 2x2 average pooling when `with_conv` is false)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        # Torch convs pad symmetrically; the taming VQGAN pads only right/bottom.
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then conv3x3 when `with_conv`."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


def _run_level(blocks: nn.ModuleList, attn: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Resnet blocks of one level, each followed by its attention block.

    Reproduces open-muse's quirk on purpose: the attention blocks run only when the level holds
    more than one of them; a lone attention block is in the weights but skipped. Trained
    checkpoints depend on it, so fixing it would change every code they produce.
    """
    for i, block in enumerate(blocks):
        x = block(x)
        if len(attn) > 1:
            x = attn[i](x)
    return x


class DownsamplingBlock(nn.Module):
    """One encoder level: `num_res_blocks` ResnetBlocks (+ AttnBlocks at attention resolutions),
    then a Downsample except at the last level."""

    def __init__(self, config: VQGANConfig, level: int, resolution: int) -> None:
        super().__init__()
        in_mult = (1, *config.channel_mult)
        width_in = config.hidden_channels * in_mult[level]
        width = config.hidden_channels * config.channel_mult[level]
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(config.num_res_blocks):
            self.block.append(ResnetBlock(width_in, width, config.dropout))
            width_in = width
            if resolution in config.attn_resolutions:
                self.attn.append(AttnBlock(width))
        last = level == config.num_resolutions - 1
        self.downsample = None if last else Downsample(width, config.resample_with_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _run_level(self.block, self.attn, x)
        return x if self.downsample is None else self.downsample(x)


class UpsamplingBlock(nn.Module):
    """One decoder level: `num_res_blocks + 1` ResnetBlocks (+ AttnBlocks at attention
    resolutions), then an Upsample except at level 0."""

    def __init__(self, config: VQGANConfig, level: int, resolution: int) -> None:
        super().__init__()
        mult = config.channel_mult
        width_in = config.hidden_channels * (mult[-1] if level == config.num_resolutions - 1 else mult[level + 1])
        width = config.hidden_channels * mult[level]
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(config.num_res_blocks + 1):
            self.block.append(ResnetBlock(width_in, width, config.dropout))
            width_in = width
            if resolution in config.attn_resolutions:
                self.attn.append(AttnBlock(width))
        self.upsample = None if level == 0 else Upsample(width, config.resample_with_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _run_level(self.block, self.attn, x)
        return x if self.upsample is None else self.upsample(x)


class MidBlock(nn.Module):
    """ResnetBlock → AttnBlock (unless `no_attn`) → ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int, no_attn: bool, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = None if no_attn else AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_1(x)
        if self.attn_1 is not None:
            x = self.attn_1(x)
        return self.block_2(x)


class Encoder(nn.Module):
    """(B, 3, R, R) → (B, z_channels, R/f, R/f)."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(config.num_channels, config.hidden_channels, kernel_size=3, padding=1)
        self.down = nn.ModuleList(
            DownsamplingBlock(config, level, config.resolution // 2**level) for level in range(config.num_resolutions)
        )
        mid_width = config.hidden_channels * config.channel_mult[-1]
        self.mid = MidBlock(mid_width, config.no_attn_mid_block, config.dropout)
        self.norm_out = _group_norm(mid_width)
        self.conv_out = nn.Conv2d(mid_width, config.z_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, R/f, R/f) → (B, 3, R, R); `up` is indexed by level (0 = full resolution)
    and run from the last level to the first."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        mid_width = config.hidden_channels * config.channel_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, mid_width, kernel_size=3, padding=1)
        self.mid = MidBlock(mid_width, config.no_attn_mid_block, config.dropout)
        self.up = nn.ModuleList(
            UpsamplingBlock(config, level, config.resolution // 2**level) for level in range(config.num_resolutions)
        )
        out_width = config.hidden_channels * config.channel_mult[0]
        self.norm_out = _group_norm(out_width)
        self.conv_out = nn.Conv2d(out_width, config.num_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation of (B, D, h, w) latents; codes (B, h*w) row-major."""

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)

    def distances(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Squared L2 distances (N, D) x codebook → (N, K), as ‖z‖² + ‖e‖² − 2 z·e, in float32."""
        # Always fp32, also under bf16/fp16 autocast: ‖z‖² + ‖e‖² − 2 z·e cancels heavily, and in
        # half precision near-ties would pick different codes than the fp32 original.
        with torch.autocast(z_flat.device.type, enabled=False):
            codebook = self.embedding.weight.float()
            z_flat = z_flat.float()
            z_sq = z_flat.pow(2).sum(dim=1, keepdim=True)
            e_sq = codebook.pow(2).sum(dim=1).unsqueeze(0)
            return torch.addmm(z_sq + e_sq, z_flat, codebook.t(), alpha=-2.0)

    def get_code(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) latents → (B, h*w) int64 codes."""
        b, d, h, w = z.shape
        # argmin has no gradient: skip building a graph for the (N, K) distance matrix.
        with torch.no_grad():
            z_flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            return self.distances(z_flat).argmin(dim=1).reshape(b, h * w)

    def get_codebook_entry(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, n) codes, n a perfect square → (B, D, √n, √n) quantised latents."""
        b, n = codes.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"decode_code: {n} codes per image is not a square grid (expected side**2)")
        return self.embedding(codes).reshape(b, side, side, self.embedding_dim).permute(0, 3, 1, 2).contiguous()

    def forward(
        self, z: torch.Tensor, return_loss: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, D, h, w) → (z_q (B, D, h, w), codes (B, h*w), loss or None).

        With `return_loss`, loss = mse(sg(z_q), z) + β·mse(z_q, sg(z)) and z_q carries the
        straight-through gradient to z.
        """
        b, d, h, w = z.shape
        codes = self.get_code(z)
        # Reshape by z's own (h, w): forward also serves non-square latents, unlike decode_code.
        z_q = self.embedding(codes).reshape(b, h, w, d).permute(0, 3, 1, 2).contiguous()
        loss = None
        if return_loss:
            # First term moves the encoder, second the codebook (open-muse's order; keep the numbers).
            loss = F.mse_loss(z, z_q.detach()) + self.commitment_cost * F.mse_loss(z_q, z.detach())
            z_q = z + (z_q - z).detach()
        return z_q, codes, loss


# The gray flag (VQGANConfig.gray_flag). A small tokenizer cannot tell a gray photo from a dull
# colour one by its codes, so its decoder tints gray images; the flag gives each token one exact bit
# instead: codes K/2 + i are the gray twins of colour codes i (same vector, flag +1 instead of -1).
GRAY_FLAG = 1.0
# A pixel is gray when its channels agree to the 8-bit level, as in an RGB file of a gray image.
GRAY_TOLERANCE = 0.5 / 255
# ITU-R BT.601 luma as PIL's `convert("L")` weighs it (the demo's gray annotations use the original's
# rounding, 0.2989 / 0.5870 / 0.1140 in data_pipelines/colorization.py: the same gray to within 0.03 levels).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def gray_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, R, R) in [0, 1] → (B, 1, R/patch, R/patch) bool: every pixel of the patch is gray."""
    chroma = images.amax(dim=1, keepdim=True) - images.amin(dim=1, keepdim=True)
    return F.max_pool2d(chroma.float(), patch) < GRAY_TOLERANCE


def to_luma(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) → the same shape, gray: the BT.601 luma in all three channels."""
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).expand_as(images)


class VQGANModel(nn.Module):
    """The open-muse VQGAN: encoder → quant_conv → quantize → post_quant_conv → decoder.

    Inputs are [0, 1] RGB (B, 3, R, R). `forward(x)` returns (x̂, z_q, codes);
    `forward(x, return_loss=True)` returns (x̂, z_q, codes, quantizer_loss) with the
    straight-through estimator, which is what training uses. Outputs are not clamped.

    With `config.gray_flag` the last latent channel is not learned: the encoder sets it to +1 on
    tokens whose f×f patch is gray and -1 elsewhere, so nearest-code search picks a gray twin
    (codes K/2 …) exactly for gray patches, and the decoder paints gray-flagged tokens' pixels with
    their luma. Colour images get the same codes as without the flag.
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.num_embeddings, config.quantized_embed_dim, config.commitment_cost)
        self.quant_conv = nn.Conv2d(config.z_channels, config.quantized_embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.quantized_embed_dim, config.z_channels, kernel_size=1)
        if config.gray_flag:
            with torch.no_grad():
                flags = self.quantize.embedding.weight[:, -1]
                flags[: config.num_embeddings // 2] = -GRAY_FLAG
                flags[config.num_embeddings // 2 :] = GRAY_FLAG

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) → un-quantised latents (B, quantized_embed_dim, R/f, R/f)."""
        latents = self.quant_conv(self.encoder(x))
        if not self.config.gray_flag:
            return latents
        gray = gray_patches(x, self.config.downsample_factor).to(latents.dtype)
        return torch.cat([latents[:, :-1], (2 * gray - 1) * GRAY_FLAG], dim=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, R, R) → (z_q (B, D, R/f, R/f), codes (B, (R/f)**2))."""
        z_q, codes, _ = self.quantize(self.encode_latents(x))
        return z_q, codes

    def get_code(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) → codes (B, (R/f)**2) int64."""
        return self.quantize.get_code(self.encode_latents(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latents (B, D, h, w) → images (B, 3, h*f, w*f), not clamped."""
        images = self.decoder(self.post_quant_conv(z_q))
        if not self.config.gray_flag:
            return images
        f = self.config.downsample_factor
        gray = (z_q[:, -1:] > 0).repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        return torch.where(gray, to_luma(images), images)

    def decode_code(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, n), n a perfect square → images (B, 3, √n*f, √n*f), not clamped."""
        return self.decode(self.quantize.get_codebook_entry(codes))

    def forward(self, x: torch.Tensor, return_loss: bool = False) -> tuple[torch.Tensor, ...]:
        """(x̂, z_q, codes), plus the quantizer loss as a fourth item when `return_loss`."""
        z_q, codes, loss = self.quantize(self.encode_latents(x), return_loss=return_loss)
        x_hat = self.decode(z_q)
        return (x_hat, z_q, codes, loss) if return_loss else (x_hat, z_q, codes)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (74.0 M for the LVM configuration)."""
    return sum(p.numel() for p in model.parameters())

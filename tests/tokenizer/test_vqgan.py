"""The open-muse VQGAN against open-muse's VQGANModel: shapes, the quantizer against brute force, the
losses' numbers, the blocks against their formulas, parameter names and count."""

import math

import pytest
import torch
import torch.nn.functional as F

from lvm.tokenizer.vqgan import (
    AttnBlock,
    Downsample,
    Upsample,
    VectorQuantizer,
    VQGANConfig,
    VQGANModel,
    count_parameters,
)


def test_encode_decode_shapes_and_code_range(model, config, images):
    z_q, codes = model.encode(images)
    side = config.resolution // config.downsample_factor
    assert config.downsample_factor == 4 and config.tokens_per_image == side * side == 64
    assert z_q.shape == (3, config.quantized_embed_dim, side, side)
    assert codes.shape == (3, config.tokens_per_image) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < config.num_embeddings
    assert torch.equal(model.get_code(images), codes)
    x_hat = model.decode(z_q)
    assert x_hat.shape == images.shape
    x_hat2, z_q2, codes2 = model(images)
    assert torch.equal(codes2, codes) and torch.equal(z_q2, z_q) and torch.equal(x_hat2, x_hat)


def test_decode_code_of_get_code_equals_decode_of_quantized_latents(model, images):
    with torch.no_grad():
        z_q, _ = model.encode(images)
        assert torch.equal(model.decode_code(model.get_code(images)), model.decode(z_q))


def test_lvm_config_is_f16_with_256_tokens_and_8192_codes():
    config = VQGANConfig()
    assert (config.resolution, config.downsample_factor, config.tokens_per_image, config.num_embeddings) == (
        256,
        16,
        256,
        8192,
    )


def brute_force_codes(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest codebook row by explicit squared L2 (no normalisation) at every (b, i, j), in float64,
    listed row-major: code index i·w + j."""
    b, _, h, w = latents.shape
    codes = torch.empty(b, h * w, dtype=torch.long)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                vector = latents[n, :, i, j].double()
                distances = ((codebook.double() - vector) ** 2).sum(dim=1)
                codes[n, i * w + j] = int(distances.argmin())
    return codes


def test_quantizer_picks_nearest_codebook_entry_against_brute_force():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(num_embeddings=50, embedding_dim=6, commitment_cost=0.25)
    with torch.no_grad():
        # Codes of different norms: a cosine (normalised) distance would pick differently.
        quantizer.embedding.weight.copy_(torch.randn(50, 6) * torch.linspace(0.1, 3.0, 50)[:, None])
    latents = torch.randn(2, 6, 5, 7) * 1.5
    z_q, codes, loss = quantizer(latents)
    expected = brute_force_codes(latents, quantizer.embedding.weight)
    assert loss is None
    assert torch.equal(codes, expected)
    # z_q holds the picked rows at their (i, j) place.
    rows = quantizer.embedding.weight[expected].reshape(2, 5, 7, 6).permute(0, 3, 1, 2)
    assert torch.equal(z_q, rows)
    # The independent cdist agrees too.
    flat = latents.permute(0, 2, 3, 1).reshape(-1, 6)
    assert torch.equal(codes.flatten(), torch.cdist(flat.double(), quantizer.embedding.weight.double()).argmin(1))


def test_codebook_init_is_uniform_within_one_over_k():
    quantizer = VectorQuantizer(num_embeddings=128, embedding_dim=16, commitment_cost=0.25)
    weight = quantizer.embedding.weight.detach()
    assert float(weight.abs().max()) <= 1 / 128
    assert float(weight.abs().max()) > 0.9 / 128  # spread over the range, not all near zero


def test_quantizer_loss_and_gradients_follow_the_spec_numbers():
    """loss = ‖sg(z_q) − z‖² + β‖z_q − sg(z)‖² (means): the encoder gets weight 1, the codebook β;
    z_q passes gradients straight through to z."""
    torch.manual_seed(1)
    beta = 0.3
    quantizer = VectorQuantizer(num_embeddings=8, embedding_dim=4, commitment_cost=beta)
    with torch.no_grad():
        quantizer.embedding.weight.normal_()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, codes, loss = quantizer(z, return_loss=True)
    rows = quantizer.embedding.weight[codes].reshape(2, 3, 3, 4).permute(0, 3, 1, 2)
    mse = ((rows - z) ** 2).mean()
    assert torch.allclose(loss, (1 + beta) * mse)
    assert torch.allclose(z_q, rows, atol=1e-6)

    loss.backward()
    n = z.numel()
    assert torch.allclose(z.grad, 2 * (z - rows).detach() / n, atol=1e-7)
    expected_codebook_grad = torch.zeros_like(quantizer.embedding.weight)
    flat_z = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    expected_codebook_grad.index_add_(
        0, codes.flatten(), beta * 2 * (quantizer.embedding.weight.detach()[codes.flatten()] - flat_z) / n
    )
    assert torch.allclose(quantizer.embedding.weight.grad, expected_codebook_grad, atol=1e-7)

    # Straight-through: d(sum z_q)/dz is the identity.
    z.grad = None
    z_q, _, _ = quantizer(z, return_loss=True)
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_attention_block_matches_the_explicit_formula():
    torch.manual_seed(2)
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 4, 5)
    with torch.no_grad():
        h = block.norm(x)
        q, k, v = (conv(h).reshape(2, 32, 20) for conv in (block.q, block.k, block.v))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * 32**-0.5, dim=2)  # (B, query, key)
        attended = torch.bmm(v, weights.transpose(1, 2)).reshape(2, 32, 4, 5)
        expected = x + block.proj_out(attended)
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_downsample_pads_right_and_bottom_only():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(1, 2, 6, 6)
    down = Downsample(2, with_conv=True)
    with torch.no_grad():
        down.conv.bias.zero_()
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 0, 0] = 1.0  # top-left tap of channel 0
        down.conv.weight[1, 1, 2, 2] = 1.0  # bottom-right tap of channel 1
        y = down(x)
    assert y.shape == (1, 2, 3, 3)
    assert torch.equal(y[0, 0], x[0, 0, 0::2, 0::2])  # nothing padded above or left
    padded = F.pad(x[0, 1], (0, 1, 0, 1))
    assert torch.equal(y[0, 1], padded[2::2, 2::2])  # the last row/column reads the zero padding
    assert float(y[0, 1, -1, -1]) == 0.0
    assert torch.equal(Downsample(2, with_conv=False)(x), F.avg_pool2d(x, 2))


def test_upsample_is_nearest_then_conv():
    up = Upsample(1, with_conv=True)
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.bias.zero_()
        up.conv.weight[0, 0, 1, 1] = 1.0  # identity kernel
        x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        expected = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
        assert torch.equal(up(x)[0, 0], expected)


def test_single_attention_block_in_a_level_is_skipped_but_stored(model):
    """Spec quirk: the encoder level at 16 px holds one attention block (num_res_blocks = 1) and
    skips it; the decoder level there holds two and runs them."""
    assert len(model.encoder.down[1].attn) == 1 and len(model.decoder.up[1].attn) == 2
    assert "encoder.down.1.attn.0.q.weight" in model.state_dict()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_latents(x)
        model.encoder.down[1].attn[0].proj_out.bias.add_(1.0)
        assert torch.equal(model.encode_latents(x), before)
        z = torch.randn(1, model.config.quantized_embed_dim, 8, 8)
        decoded = model.decode(z)
        model.decoder.up[1].attn[0].proj_out.bias.add_(1.0)
        assert not torch.allclose(model.decode(z), decoded)


def test_no_attn_mid_block_removes_the_mid_attention(make_config):
    with_attn = VQGANModel(make_config()).state_dict()
    without = VQGANModel(make_config(no_attn_mid_block=True)).state_dict()
    dropped = sorted(set(with_attn) - set(without))
    assert dropped and all(k.startswith(("encoder.mid.attn_1.", "decoder.mid.attn_1.")) for k in dropped)


def spec_parameter_names(config: VQGANConfig) -> set[str]:
    """Parameter names from the original's evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel's naming rules,
    written out level by level."""
    names = {
        "encoder.conv_in",
        "encoder.norm_out",
        "encoder.conv_out",
        "quant_conv",
        "post_quant_conv",
        "decoder.conv_in",
        "decoder.norm_out",
        "decoder.conv_out",
    }
    mult = config.channel_mult
    for part in ("encoder", "decoder"):
        names |= {f"{part}.mid.block_{i}.{layer}" for i in (1, 2) for layer in ("norm1", "conv1", "norm2", "conv2")}
        if not config.no_attn_mid_block:
            names |= {f"{part}.mid.attn_1.{layer}" for layer in ("norm", "q", "k", "v", "proj_out")}
    for level, m in enumerate(mult):
        resolution = config.resolution // 2**level
        width = config.hidden_channels * m
        enc_in = config.hidden_channels * ((1,) + tuple(mult))[level]
        dec_in = config.hidden_channels * (mult[-1] if level == len(mult) - 1 else mult[level + 1])
        for part, group, n_blocks, first_in in (
            ("encoder", "down", config.num_res_blocks, enc_in),
            ("decoder", "up", config.num_res_blocks + 1, dec_in),
        ):
            for n in range(n_blocks):
                prefix = f"{part}.{group}.{level}"
                names |= {f"{prefix}.block.{n}.{layer}" for layer in ("norm1", "conv1", "norm2", "conv2")}
                if n == 0 and first_in != width:
                    names.add(f"{prefix}.block.{n}.nin_shortcut")
                if resolution in config.attn_resolutions:
                    names |= {f"{prefix}.attn.{n}.{layer}" for layer in ("norm", "q", "k", "v", "proj_out")}
        if level != len(mult) - 1:
            names.add(f"encoder.down.{level}.downsample.conv")
        if level != 0:
            names.add(f"decoder.up.{level}.upsample.conv")
    return {f"{name}.{kind}" for name in names for kind in ("weight", "bias")} | {"quantize.embedding.weight"}


def test_lvm_configuration_has_spec_names_and_74_0_m_parameters():
    config = VQGANConfig()
    with torch.device("meta"):
        model = VQGANModel(config)
    assert set(model.state_dict()) == spec_parameter_names(config)
    assert model.state_dict()["quantize.embedding.weight"].shape == (8192, 256)
    assert round(count_parameters(model) / 1e6, 1) == 74.0


def test_tiny_configuration_has_spec_names(model, config):
    assert set(model.state_dict()) == spec_parameter_names(config)


@pytest.mark.parametrize(
    "bad", [dict(hidden_channels=24), dict(resolution=30), dict(channel_mult=()), dict(num_embeddings=0)]
)
def test_invalid_config_is_refused_with_the_field_named(make_config, bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "hidden" not in next(iter(bad)) else "hidden_channels"):
        make_config(**bad)


def test_config_normalises_lists_and_round_trips_to_dict(make_config):
    config = make_config(channel_mult=[1, 1, 2], attn_resolutions=[16])
    assert config.channel_mult == (1, 1, 2) and config.attn_resolutions == (16,)
    assert VQGANConfig(**config.to_dict()) == config
    assert config.to_dict()["channel_mult"] == [1, 1, 2]
    assert math.isqrt(config.tokens_per_image) ** 2 == config.tokens_per_image

"""Our VQGAN against an independently built reference (tests/tokenizer/reference_vqgan.py, written from
the original's evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel with torch.nn.functional only): an
open-muse folder whose weights and config are made without
our module is loaded with `load_vqgan`; codes must match the reference exactly, pixels within 1e-5."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lvm.tokenizer import decode, encode, load_vqgan
from tests.tokenizer import reference_vqgan as ref
from tests.tokenizer.open_muse import OPEN_MUSE_CONFIG, open_muse_shapes, write_open_muse_folder

PIXEL_TOL = 1e-5


def open_muse_config(**overrides) -> dict:
    return {**OPEN_MUSE_CONFIG, **overrides}


CONFIGS = {
    # res 32, f = 4. Attention at 16 px: the encoder level there holds one block (skipped), the
    # decoder level two (run). 32 → 64 channels at level 2 needs nin_shortcuts both ways.
    "lone-attn-skipped": open_muse_config(
        channel_mult=[1, 1, 2],
        num_res_blocks=1,
        attn_resolutions=[16],
        z_channels=32,
        num_embeddings=64,
        quantized_embed_dim=8,
    ),
    # Attention at 8 px with two resnet blocks: encoder 2 attention blocks, decoder 3, all run.
    "attn-run-mid-attn": open_muse_config(),
    "attn-run-no-mid-attn": open_muse_config(no_attn_mid_block=True, attn_resolutions=[32, 8]),
    # The LVM tokenizer's structure (the original's evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel) at
    # hidden 32 and 64 px: f = 16, 4×4 codes, attention
    # at 16 px with 2 encoder / 3 decoder blocks, channel changes 32 → 64 → 128.
    "lvm-structure": open_muse_config(
        resolution=64,
        hidden_channels=32,
        channel_mult=[1, 1, 2, 2, 4],
        num_res_blocks=2,
        attn_resolutions=[16],
        z_channels=64,
        num_embeddings=96,
        quantized_embed_dim=16,
    ),
}


def test_configs_cover_what_they_claim():
    """The configs above hold the structures the tests are meant to exercise."""
    shapes = {name: open_muse_shapes(cfg) for name, cfg in CONFIGS.items()}
    lone = shapes["lone-attn-skipped"]
    assert "encoder.down.1.attn.0.q.weight" in lone and "encoder.down.1.attn.1.q.weight" not in lone
    assert "decoder.up.1.attn.1.q.weight" in lone
    assert "encoder.down.2.attn.1.q.weight" in shapes["attn-run-mid-attn"]
    assert "encoder.mid.attn_1.q.weight" in shapes["attn-run-mid-attn"]
    assert "encoder.mid.attn_1.q.weight" not in shapes["attn-run-no-mid-attn"]
    for table in shapes.values():
        assert any(".nin_shortcut." in name for name in table)


def sane_state(cfg: dict, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights whose activations stay O(1): convs ~ N(0, 1/fan_in), norms 1 / 0 plus small noise, pixels
    around 0.5, and a codebook drawn around the reference encoder's latents of `images` so that many
    codes are used."""
    generator = torch.Generator().manual_seed(seed)

    def noise(shape, scale):
        return scale * torch.randn(shape, generator=generator)

    state = {}
    for name, shape in open_muse_shapes(cfg).items():
        if name == "quantize.embedding.weight":
            state[name] = torch.zeros(shape)  # replaced below, once the latents are known
        elif len(shape) == 4:  # conv weight (out, in, k, k)
            state[name] = noise(shape, 1.0 / math.sqrt(shape[1] * shape[2] * shape[3]))
        elif ".norm" in name and name.endswith(".weight"):
            state[name] = 1.0 + noise(shape, 0.1)
        else:  # norm and conv biases
            state[name] = noise(shape, 0.1)
    # Pixels like a trained decoder's, around 0.5 with std ~0.2: most survive decode()'s clamp, and
    # fp32 rounding (which scales with the output) stays well inside the 1e-5 tolerance.
    state["decoder.conv_out.weight"] *= 0.25
    state["decoder.conv_out.bias"] += 0.5
    with torch.no_grad():
        latents = ref.encode_latents(state, cfg, images)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    codebook = flat.mean(0) + flat.std(0) * torch.randn(cfg["num_embeddings"], flat.shape[1], generator=generator)
    state["quantize.embedding.weight"] = codebook
    return state


def make_images(cfg: dict, n: int = 4) -> torch.Tensor:
    """n smooth random images in [0, 1] (low-resolution noise upsampled) plus fine noise."""
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    smooth = F.interpolate(coarse, size=cfg["resolution"], mode="bilinear", align_corners=False)
    fine = torch.rand(n, 3, cfg["resolution"], cfg["resolution"], generator=generator)
    return (0.8 * smooth + 0.2 * fine).clamp(0, 1)


def check_against_reference(folder, cfg: dict, state: dict[str, torch.Tensor], images: torch.Tensor) -> None:
    model = load_vqgan(folder)
    with torch.no_grad():
        expected_latents = ref.encode_latents(state, cfg, images)
        expected_codes = ref.encode_codes(state, cfg, images)
        assert torch.allclose(model.encode_latents(images), expected_latents, atol=1e-4, rtol=1e-4)
    # Enough distinct codes that a wrong encoder, quantizer or code order could not pass by chance.
    assert len(expected_codes.unique()) >= min(12, cfg["num_embeddings"] // 3), expected_codes.unique()
    codes = encode(model, images)
    assert codes.dtype == torch.long and torch.equal(codes, expected_codes)

    # Pixels from the encoded codes and from codes covering the whole codebook.
    n = expected_codes.shape[1]
    every_code = torch.arange(2 * n) % cfg["num_embeddings"]
    all_codes = torch.cat([expected_codes, every_code.reshape(2, n)])
    with torch.no_grad():
        expected_pixels = ref.decode_pixels(state, cfg, all_codes)
        ours = model.decode_code(all_codes)
    side = 2 ** (len(cfg["channel_mult"]) - 1) * math.isqrt(n)  # f · √n
    assert expected_pixels.shape == (len(all_codes), 3, side, side)
    assert 0.05 < expected_pixels.std() < 1  # activations neither vanished nor exploded
    torch.testing.assert_close(ours, expected_pixels, atol=PIXEL_TOL, rtol=0)
    torch.testing.assert_close(decode(model, all_codes), expected_pixels.clamp(0, 1), atol=PIXEL_TOL, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_codes_and_pixels_match_the_reference(tmp_path, name):
    cfg = CONFIGS[name]
    images = make_images(cfg)
    state = sane_state(cfg, images)
    write_open_muse_folder(tmp_path, cfg, state=state)
    check_against_reference(tmp_path, cfg, state, images)


def test_pytorch_model_bin_matches_the_reference(tmp_path):
    """open-muse's own format: a plain dict saved with torch.save, loaded with weights_only."""
    cfg = CONFIGS["lone-attn-skipped"]
    images = make_images(cfg)
    state = sane_state(cfg, images, seed=3)
    write_open_muse_folder(tmp_path, cfg, state=state, weights_name="pytorch_model.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "pytorch_model.bin"]
    check_against_reference(tmp_path, cfg, state, images)


def test_reference_obeys_the_lone_attention_quirk():
    """The reference itself: a lone attention block's weights change nothing, a run one's do (so a
    module that ran or skipped the wrong blocks would disagree with it)."""
    cfg = CONFIGS["lone-attn-skipped"]
    images = make_images(cfg)
    state = sane_state(cfg, images)
    codes = torch.arange(64).reshape(1, 64) % cfg["num_embeddings"]
    with torch.no_grad():
        base_latents = ref.encode_latents(state, cfg, images)
        base_pixels = ref.decode_pixels(state, cfg, codes)
        skipped = {
            **state,
            "encoder.down.1.attn.0.proj_out.weight": torch.ones_like(state["encoder.down.1.attn.0.proj_out.weight"]),
        }
        assert torch.equal(ref.encode_latents(skipped, cfg, images), base_latents)
        run = {
            **state,
            "decoder.up.1.attn.0.proj_out.weight": torch.ones_like(state["decoder.up.1.attn.0.proj_out.weight"]),
        }
        assert not torch.allclose(ref.decode_pixels(run, cfg, codes), base_pixels, atol=1e-3)

"""Batched images ⇄ codes: chunking does not change results, ranges and shapes, errors."""

import copy

import pytest
import torch

import lvm.tokenizer as tokenizer
from lvm.tokenizer.codec import decode_codes, encode_images, to_channels_last


def test_encode_matches_the_model_and_is_independent_of_batch_size(model, images, config):
    expected = model.get_code(images)
    for batch_size in (1, 2, 64):
        codes = encode_images(model, images, batch_size=batch_size)
        assert codes.dtype == torch.int64 and codes.shape == (3, config.tokens_per_image)
        assert torch.equal(codes, expected)
    assert torch.equal(tokenizer.encode(model, images), expected)


def test_decode_is_clamped_to_unit_range_and_independent_of_batch_size(model, images, config):
    codes = encode_images(model, images)
    with torch.no_grad():
        raw = model.decode_code(codes)
    decoded = decode_codes(model, codes, batch_size=64)
    assert decoded.shape == images.shape and decoded.dtype == torch.float32
    assert float(raw.min()) < 0.0  # so the clamp is exercised
    assert torch.equal(decoded, raw.clamp(0, 1))
    assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0
    # Chunks of 2 may pick other conv kernels: equal up to float rounding.
    torch.testing.assert_close(decode_codes(model, codes, batch_size=2), decoded, rtol=0, atol=1e-5)
    assert torch.equal(tokenizer.decode(model, codes), decoded)


def test_model_mode_is_restored_and_no_graph_is_built(model, images):
    model.train()
    codes = encode_images(model, images)
    decoded = decode_codes(model, codes)
    assert model.training
    assert not codes.requires_grad and not decoded.requires_grad


def test_empty_batches(model, config):
    assert encode_images(model, torch.zeros(0, 3, 32, 32)).shape == (0, config.tokens_per_image)
    assert decode_codes(model, torch.zeros(0, config.tokens_per_image, dtype=torch.long)).shape == (0, 3, 32, 32)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(2, 3, 64, 64), "resolution = 32"),
        (torch.rand(2, 1, 32, 32), r"\(B, 3, H, W\)"),
        (torch.randint(0, 255, (2, 3, 32, 32)), "float images"),
    ],
)
def test_encode_refuses_wrong_inputs(model, images, message):
    with pytest.raises(ValueError, match=message):
        encode_images(model, images)


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.full((1, 64), 64), r"outside the codebook \[0, 64\)"),
        (torch.full((1, 64), -1), "outside the codebook"),
        (torch.zeros(1, 60, dtype=torch.long), "not a square grid"),
        (torch.zeros(64, dtype=torch.long), r"\(B, n\)"),
    ],
)
def test_decode_refuses_wrong_codes(model, codes, message):
    with pytest.raises(ValueError, match=message):
        decode_codes(model, codes)


def test_channels_last_gives_the_same_codes_and_pixels(model, images):
    codes = encode_images(model, images)
    pixels = decode_codes(model, codes)
    nhwc = to_channels_last(copy.deepcopy(model))
    assert nhwc.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(encode_images(nhwc, images, channels_last=True), codes)
    torch.testing.assert_close(decode_codes(nhwc, codes), pixels, rtol=0, atol=1e-5)


def test_code_search_stays_fp32_under_bf16_autocast(model, images):
    with torch.no_grad():
        latents = model.encode_latents(images)
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        fp32_codes = model.quantize.get_code(latents)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            distances = model.quantize.distances(flat.bfloat16())
            autocast_codes = model.quantize.get_code(latents)
    # In bf16 the distances' cancellation would flip near-ties; the search must not run in it.
    assert distances.dtype == torch.float32
    assert torch.equal(autocast_codes, fp32_codes)
    # The whole encode under autocast runs (the encoder in bf16) and returns codes in range.
    codes = encode_images(model, images, autocast_dtype=torch.bfloat16)
    assert codes.dtype == torch.int64 and int(codes.max()) < model.config.num_embeddings

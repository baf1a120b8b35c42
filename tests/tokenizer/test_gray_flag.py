"""The gray flag (VQGANConfig.gray_flag, lvm.tokenizer.gray_flag): colour images keep their codes and
reconstructions, gray patches take the gray twins and decode to exact gray, the folder round-trips, and a
reader that ignores the flag behaves as the source tokenizer."""

import pytest
import torch

from lvm.eval.prompt_quality import mean_saturation
from lvm.tokenizer.checkpoint import load_vqgan, read_config, save_vqgan
from lvm.tokenizer.gray_flag import add_gray_flag, main
from lvm.tokenizer.vqgan import LUMA_WEIGHTS, VQGANConfig, VQGANModel, gray_patches, to_luma


def gray_versions(images: torch.Tensor) -> torch.Tensor:
    """Gray images at 8-bit levels, R = G = B, as a gray annotation's PNG holds them."""
    luma = (images * torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return (luma * 255).round().div(255).expand_as(images).contiguous()


@pytest.fixture
def flagged(model):
    return add_gray_flag(model).eval()


def test_colour_images_keep_their_codes_and_reconstructions(model, flagged, images):
    with torch.no_grad():
        x_hat, _, codes = model(images)
        flagged_hat, _, flagged_codes = flagged(images)
    assert not gray_patches(images, model.config.downsample_factor).any()
    assert torch.equal(flagged_codes, codes)
    torch.testing.assert_close(flagged_hat, x_hat)


def test_gray_images_take_the_gray_twins_and_decode_to_exact_gray(model, flagged, images):
    gray = gray_versions(images)
    codes_k = model.config.num_embeddings
    with torch.no_grad():
        base_hat, _, base_codes = model(gray)
        flagged_hat, _, flagged_codes = flagged(gray)
    assert torch.equal(flagged_codes, base_codes + codes_k)  # the same code, from the gray half
    assert mean_saturation(base_hat.clamp(0, 1)) > 0.05  # the source tokenizer tints them
    assert torch.equal(flagged_hat[:, 0], flagged_hat[:, 1]) and torch.equal(flagged_hat[:, 1], flagged_hat[:, 2])
    torch.testing.assert_close(flagged_hat, to_luma(base_hat))  # the source's output, painted with its luma


def test_the_flag_is_per_patch(model, flagged, images):
    """A colour image with one gray f×f patch: only that token is flagged and only its pixels are gray."""
    f = model.config.downsample_factor
    mixed = images[:1].clone()
    mixed[..., :f, f : 2 * f] = gray_versions(mixed)[..., :f, f : 2 * f]
    with torch.no_grad():
        x_hat, _, codes = flagged(mixed)
    flagged_tokens = (codes >= model.config.num_embeddings).nonzero()[:, 1].tolist()
    assert flagged_tokens == [1]  # row 0, column 1 of the code grid
    chroma = x_hat.amax(1) - x_hat.amin(1)
    assert chroma[0, :f, f : 2 * f].max() == 0 and chroma[0, f:, :].min() > 0


def test_a_reader_that_ignores_the_flag_sees_the_source_tokenizer(model, flagged, images, tmp_path):
    """What open-muse makes of the folder: the same shapes without the flag's two rules."""
    ignoring = VQGANModel(VQGANConfig(**(flagged.config.to_dict() | {"gray_flag": False}))).eval()
    ignoring.load_state_dict(flagged.state_dict())
    for batch in (images, gray_versions(images)):
        with torch.no_grad():
            x_hat, _, codes = model(batch)
            ignoring_hat, _, ignoring_codes = ignoring(batch)
        assert torch.equal(ignoring_codes, codes)
        torch.testing.assert_close(ignoring_hat, x_hat)


def test_the_folder_round_trips_and_the_cli_writes_it(model, images, tmp_path):
    save_vqgan(model, tmp_path / "source")
    out = main([str(tmp_path / "source"), str(tmp_path / "flagged"), "--dtype", "float32"])
    config = read_config(out)
    assert config.gray_flag and config.num_embeddings == 2 * model.config.num_embeddings
    assert config.quantized_embed_dim == model.config.quantized_embed_dim + 1
    assert not read_config(tmp_path / "source").gray_flag  # absent from open-muse configs: false
    loaded = load_vqgan(out)
    with torch.no_grad():
        torch.testing.assert_close(loaded(gray_versions(images))[0], add_gray_flag(model)(gray_versions(images))[0])
    with pytest.raises(ValueError, match="already has a gray flag"):
        add_gray_flag(loaded)


def test_gray_flag_config_is_checked(make_config):
    with pytest.raises(ValueError, match="gray_flag needs an even num_embeddings"):
        make_config(num_embeddings=63, gray_flag=True)
    with pytest.raises(ValueError, match="quantized_embed_dim >= 2"):
        make_config(quantized_embed_dim=1, gray_flag=True)


def test_training_a_flagged_model_leaves_the_flag_to_the_pixels(flagged, images):
    """The flag channel is set from pixels, so no gradient reaches quant_conv's flag row, and the
    quantizer loss sees no flag error."""
    flagged.train()
    x_hat, _, _, loss = flagged(torch.cat([images, gray_versions(images)]), return_loss=True)
    (x_hat.square().mean() + loss).backward()
    assert flagged.quant_conv.weight.grad[-1].abs().max() == 0
    assert flagged.quant_conv.weight.grad[:-1].abs().max() > 0

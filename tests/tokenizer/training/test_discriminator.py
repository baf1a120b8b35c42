"""Patch discriminator shapes, GAN losses and the adaptive weight against hand computations."""

import pytest
import torch
import torch.nn.functional as F

from lvm.tokenizer.training.discriminator import (
    NLayerDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)


@pytest.mark.parametrize(("n_layers", "side"), [(1, 14), (2, 6), (3, 2)])
def test_patch_logits_shape(n_layers, side):
    disc = NLayerDiscriminator(channels=8, n_layers=n_layers)
    assert disc(torch.rand(2, 3, 32, 32)).shape == (2, 1, side, side)  # 32 / 2**n − 2 patches a side
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * n_layers + [(1, 1)] * 2
    assert all(c.kernel_size == (4, 4) for c in convs)


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.25, 1.5])
    # hinge: ½(mean relu(1 − real) + mean relu(1 + fake))
    expected_hinge = 0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1.25 + 2.5) / 3)
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx(expected_hinge)
    assert float(generator_loss(fake, "hinge")) == pytest.approx(-(-2.0 + 0.25 + 1.5) / 3)
    expected = 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    assert torch.allclose(discriminator_loss(real, fake, "vanilla"), expected)
    assert torch.allclose(generator_loss(fake, "vanilla"), F.softplus(-fake).mean())
    with pytest.raises(ValueError, match="disc_loss must be one of"):
        discriminator_loss(real, fake, "wgan")


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])
    rec, g = (w * a).sum() + w.pow(2).sum(), (w * b).sum()  # gradients a + 2w = (5, 8) and b
    expected = (25 + 64) ** 0.5 / (1.0 + 1e-4)
    assert float(adaptive_weight(rec, g, w, disc_weight=0.5)) == pytest.approx(0.5 * expected)
    # A vanishing generator gradient is clamped at 1e4, and the weight carries no gradient.
    weight = adaptive_weight((w * a).sum(), (w * 1e-9).sum(), w)
    assert float(weight) == pytest.approx(1e4) and not weight.requires_grad

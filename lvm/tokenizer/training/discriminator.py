"""Patch discriminator and GAN losses of the taming-transformers VQGAN recipe.

`NLayerDiscriminator` is pix2pix's PatchGAN as taming-transformers uses it: a 4×4 conv with stride
2 and LeakyReLU(0.2), then `n_layers − 1` more stride-2 4×4 convs (widths doubling, capped at 8×)
each with BatchNorm and LeakyReLU, one stride-1 4×4 conv block, and a stride-1 4×4 conv to one
logit per patch. Only the BatchNorm variant is provided (taming's default; its ActNorm option is
left out). Images enter in [0, 1] and are mapped to [−1, 1] inside, the range taming trains on.

Losses (logits per patch, averaged):
- hinge:   L_D = ½(mean relu(1 − D(x)) + mean relu(1 + D(x̂))),   L_G = −mean D(x̂)
- vanilla: L_D = ½(mean softplus(−D(x)) + mean softplus(D(x̂))),  L_G = mean softplus(−D(x̂))
  (the non-saturating generator loss; taming uses −mean D(x̂) for both).

`adaptive_weight` balances the GAN term against the reconstruction term at the decoder's last
layer W: λ = ‖∇_W L_rec‖ / (‖∇_W L_G‖ + 1e-4), clamped to [0, 1e4], detached, times disc_weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GAN_LOSSES = ("hinge", "vanilla")
ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4


class NLayerDiscriminator(nn.Module):
    """PatchGAN: images (B, 3, H, W) in [0, 1] → logits (B, 1, h, w), one per overlapping patch
    (h = H / 2**n_layers − 2 for H divisible by 2**n_layers)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1 or channels < 1:
            raise ValueError(f"NLayerDiscriminator: n_layers and channels must be >= 1, got {n_layers}, {channels}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            previous, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last block keeps the resolution
            layers += [
                nn.Conv2d(
                    channels * previous, channels * mult, kernel_size=4, stride=stride, padding=1, bias=False
                ),  # BatchNorm follows: a bias would be cancelled
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix's init: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(2.0 * images - 1.0)


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """L_D of real and fake logits, `kind` "hinge" or "vanilla" (see the module docstring)."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    if kind == "vanilla":
        return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
    raise ValueError(f"disc_loss must be one of {GAN_LOSSES}, got {kind!r}")


def generator_loss(logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """L_G of the fake logits: −mean D(x̂) (hinge) or mean softplus(−D(x̂)) (vanilla)."""
    if kind == "hinge":
        return -logits_fake.mean()
    if kind == "vanilla":
        return F.softplus(-logits_fake).mean()
    raise ValueError(f"disc_loss must be one of {GAN_LOSSES}, got {kind!r}")


def adaptive_weight(
    rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float = 1.0
) -> torch.Tensor:
    """disc_weight · clamp(‖∇_W rec_loss‖ / (‖∇_W g_loss‖ + 1e-4), 0, 1e4), detached (a scalar).

    Both losses must still hold their graphs to `last_layer` (W); the graphs are kept for the
    backward pass that follows."""
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + ADAPTIVE_WEIGHT_EPS)
    return weight.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach() * disc_weight

"""LPIPS (VGG16 variant) as a frozen perceptual loss, loaded only from local files.

LPIPS (Zhang et al. 2018, package `lpips` v0.1) compares two images through the ReLU outputs
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of an ImageNet VGG16:

    d(x, y) = Σ_l mean_{h,w} w_l · (n(f_l(x)) − n(f_l(y)))²,   n(f) = f / (‖f‖_channels + 1e-10)

where the images are first mapped to [−1, 1] and shifted/scaled per channel by LPIPS' constants,
and w_l are the five 1×1 "linear heads" (non-negative channel weights) LPIPS learned on human
judgements. Nothing is downloaded: two local files are read,

- the VGG16 weights in torchvision's format (e.g. `vgg16-397923af.pth`: keys `features.N.weight`
  and `features.N.bias`; its `classifier.*` keys are ignored), and
- the LPIPS heads in lpips' `vgg.pth` format (keys `lin0.model.1.weight` … `lin4.model.1.weight`,
  shapes (1, C, 1, 1)); torchmetrics ships a copy of that file, used when no heads file is named,

each with safetensors when the name ends in `.safetensors`, else `torch.load(weights_only=True)`.

The VGG16 stack is built here layer for layer as torchvision's `vgg16().features` (same indices, so
the same state-dict keys) rather than imported: the torchvision wheels on PyPI are CUDA builds that
fail to import next to the CPU build of torch this project installs (its C++ ops cannot load).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lvm.core.weights import load_state_dict_file, state_dict_problems

# torchvision's VGG16 ("configuration D"): conv widths, "M" = 2×2 max-pool. Each conv is followed
# by a ReLU, so a conv sits at an even index of `features` and its ReLU right after it.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
# LPIPS taps `features` after these indices: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# lpips' ScalingLayer: ImageNet statistics expressed for inputs in [−1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10


def vgg16_features() -> nn.Sequential:
    """Randomly initialised VGG16 convolutional stack with the layer indices (and so the
    state-dict keys `N.weight` / `N.bias`) of torchvision's `vgg16(weights=None).features`."""
    layers: list[nn.Module] = []
    channels = 3
    for width in VGG16_LAYOUT:
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(width), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(width)
    return nn.Sequential(*layers)


class LinearHead(nn.Module):
    """lpips' `NetLinLayer`: dropout, then a 1×1 conv C → 1 without bias (key `model.1.weight`).
    The dropout exists only so the keys match; the network always runs in eval mode."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalize(features: torch.Tensor) -> torch.Tensor:
    """Scale each position's feature vector (over channels) to unit length, as lpips does."""
    norm = features.pow(2).sum(dim=1, keepdim=True).sqrt()
    return features / (norm + LPIPS_EPS)


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG16 distance between image batches (B, 3, H, W) in [0, 1] → (B,).

    Always in eval mode (`train()` is a no-op) and without trainable parameters, so it can sit
    inside a LightningModule without the optimizer or `.train()` touching it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()[: LPIPS_TAPS[-1] + 1]  # the final max-pool is not used
        for i, channels in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{i}", LinearHead(channels))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode whatever the parent asks (the heads' dropout must never be active)."""
        return super().train(False)

    def heads(self) -> list[LinearHead]:
        """The five linear heads, lin0 … lin4."""
        return [getattr(self, f"lin{i}") for i in range(len(LPIPS_CHANNELS))]

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised feature maps of images in [0, 1]."""
        h = ((2.0 * x - 1.0) - self.shift) / self.scale  # lpips expects [−1, 1] before its scaling
        taps = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in LPIPS_TAPS:
                taps.append(_unit_normalize(h))
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance of each pair of images (B, 3, H, W) in [0, 1] → (B,); 0 for identical images."""
        if x.shape != y.shape:
            raise ValueError(f"LPIPS: image batches differ in shape, {tuple(x.shape)} vs {tuple(y.shape)}")
        total = x.new_zeros(x.shape[0])
        for head, fx, fy in zip(self.heads(), self._taps(x), self._taps(y)):
            total = total + head((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or of a torch file read with weights_only=True, on the CPU."""
    return load_state_dict_file(path)


def _check_keys(path: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise a ValueError naming the file and every missing, unexpected or wrongly shaped key."""
    problems = state_dict_problems(state, expected, stored="file", wanted="expected")
    if problems:
        raise ValueError(f"{path}: not {what}: " + "; ".join(problems))


def bundled_lpips_heads() -> Path | None:
    """lpips' VGG heads as shipped inside torchmetrics (`lpips_models/vgg.pth`), or None."""
    try:
        import torchmetrics.functional.image.lpips as tm_lpips
    except ImportError:
        return None
    path = Path(tm_lpips.__file__).parent / "lpips_models" / "vgg.pth"
    return path if path.is_file() else None


def load_lpips(vgg_path: str | Path, heads_path: str | Path | None = None) -> LPIPS:
    """LPIPS-VGG16 from local files: `vgg_path` in torchvision's VGG16 format (`features.N.*`;
    `classifier.*` ignored), `heads_path` in lpips' `vgg.pth` format (`linI.model.1.weight`);
    `heads_path=None` takes the copy bundled with torchmetrics. Frozen, in eval mode."""
    model = LPIPS()
    vgg_path = Path(vgg_path)
    vgg_state = {k: v for k, v in read_weights(vgg_path).items() if not k.startswith("classifier.")}
    expected_vgg = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    _check_keys(vgg_path, vgg_state, expected_vgg, "torchvision VGG16 weights (keys features.N.weight/bias)")

    if heads_path is None:
        heads_path = bundled_lpips_heads()
        if heads_path is None:
            raise FileNotFoundError(
                "LPIPS heads: no heads file given (lpips_heads_path) and torchmetrics' bundled "
                "lpips_models/vgg.pth was not found; pass lpips' vgg.pth"
            )
    heads_path = Path(heads_path)
    heads_state = read_weights(heads_path)
    expected_heads = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
    _check_keys(heads_path, heads_state, expected_heads, "lpips VGG heads (keys lin0.model.1.weight … lin4)")

    with torch.no_grad():
        model.features.load_state_dict({k.removeprefix("features."): v for k, v in vgg_state.items()}, strict=True)
        model.load_state_dict(heads_state, strict=False)  # the heads only; features were loaded above
    return model

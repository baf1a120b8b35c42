"""An evaluation example in pixels: context images and the target images the model is scored on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageExample:
    """One example as pixels: context (n_in, 3, R, R) and target (n_target, 3, R, R) in [0, 1]."""

    id: str
    where: str
    inputs: torch.Tensor
    targets: torch.Tensor
    meta: dict = field(default_factory=dict)

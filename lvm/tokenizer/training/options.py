"""How `VQGANLitModule` trains: one frozen dataclass that Hydra instantiates (conf/train_tokenizer.yaml,
`module.options`), checked when it is made, and saved in checkpoints as a plain dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from lvm.tokenizer.training.discriminator import GAN_LOSSES

CODEBOOK_INITS = ("uniform", "kmeans", "keep")


@dataclass(frozen=True)
class VQGANTrainingOptions:
    """Loss weights, optimizer, codebook handling, LPIPS, discriminator and logging of tokenizer training.
    The module docstring of `lvm.tokenizer.training.vqgan_module` says what each term does."""

    # optimizer (AdamW) and schedule
    learning_rate: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    lr_warmup_steps: int = 0  # linear warm-up, then ...
    lr_decay_steps: int = 0  # ... cosine to end_lr at this step (0: constant lr)
    end_lr: float = 0.0
    # reconstruction and VQ terms
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    # > 0: adds this times the squared error of each image's mean colour (x̂ and x averaged over pixels),
    # the part of the error the GroupNorms make hard to learn (README, "The demo tokenizer")
    mean_colour_weight: float = 0.0
    # > 0: adds this times the mean HSV-like saturation (max − min) / (max + 0.03) of the reconstructions
    # of gray inputs (R = G = B), which plain MSE leaves on near-black pixels (README, "The demo tokenizer")
    gray_saturation_weight: float = 0.0
    codebook_weight: float = 1.0
    # codebook
    quantize_start: int = 0  # steps of plain autoencoding before the quantizer is used
    codebook_init: str = "uniform"  # uniform (open-muse) | kmeans (latents at quantize_start) | keep (warm start)
    kmeans_iterations: int = 10
    kmeans_batches: int = 1  # latents of this many batches pooled for k-means
    dead_code_restart_every: int = 0  # N > 0: restart codes unused for N steps from encoder outputs
    codebook_ema_decay: float = 0.0  # > 0: EMA codebook updates (e.g. 0.99) instead of its gradient
    codebook_ema_eps: float = 1e-5
    # initialisation: > 0 starts ±R reference channels in the streams the output GroupNorms read
    # (lvm.tokenizer.training.reference_channels), so colour gets through them from the first step
    reference_channels: float = 0.0
    # LPIPS-VGG16 from local files (never downloaded)
    perceptual_weight: float = 0.0
    lpips_vgg_path: str | None = None
    lpips_heads_path: str | None = None
    # PatchGAN discriminator
    disc_weight: float = 0.0
    disc_start: int = 0
    disc_loss: str = "hinge"
    disc_channels: int = 64
    disc_layers: int = 3
    # TensorBoard
    num_logged_images: int = 8

    def __post_init__(self) -> None:
        # Hydra hands lists and OmegaConf containers; keep plain, hashable values.
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("lpips_vgg_path", "lpips_heads_path"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else str(value))
        problems = self._problems()
        if problems:
            raise ValueError("VQGANLitModule options: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.dead_code_restart_every < 0:
            problems.append(f"dead_code_restart_every must be >= 0 (0 = off), got {self.dead_code_restart_every}")
        if self.codebook_init not in CODEBOOK_INITS:
            problems.append(f"codebook_init must be one of {CODEBOOK_INITS}, got {self.codebook_init!r}")
        for name in ("kmeans_iterations", "kmeans_batches"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("quantize_start", "lr_warmup_steps", "lr_decay_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_decay_steps and self.lr_decay_steps < self.lr_warmup_steps:
            problems.append(
                f"lr_decay_steps ({self.lr_decay_steps}) must be >= lr_warmup_steps "
                f"({self.lr_warmup_steps}), or 0 for a constant learning rate"
            )
        if self.lr_decay_steps and self.disc_weight > 0:
            problems.append(
                "a learning-rate schedule (lr_decay_steps > 0) is not supported with the discriminator "
                "(disc_weight > 0): its two optimizers keep a constant lr"
            )
        if not 0.0 <= self.codebook_ema_decay < 1.0:
            problems.append(f"codebook_ema_decay must be in [0, 1) (0 = off), got {self.codebook_ema_decay}")
        if self.reference_channels < 0:
            problems.append(f"reference_channels must be >= 0 (0 = off), got {self.reference_channels}")
        non_negative = ("mean_colour_weight", "gray_saturation_weight", "perceptual_weight", "disc_weight")
        for name in (*non_negative, "disc_start", "num_logged_images"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.disc_loss not in GAN_LOSSES:
            problems.append(f"disc_loss must be one of {GAN_LOSSES}, got {self.disc_loss!r}")
        return problems

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, strings, tuples and None: Lightning checkpoints must load with weights_only=True."""
        return asdict(self)

"""VQGANLitModule: trains the open-muse VQGAN on [0, 1] images (the original ships no such code).

Loss = l1_weight·|x̂ − x| + l2_weight·(x̂ − x)² + codebook_weight·VQ loss, where the VQ loss is the
quantizer's ‖sg(z_q) − z‖² + β‖z_q − sg(z)‖² with the straight-through estimator
(`VQGANModel.forward(x, return_loss=True)`). No perceptual or adversarial loss: those need
pretrained networks or a discriminator, and the tests and demo must run offline on a CPU.

Optional dead-code restart: at the first step every code, and then every `dead_code_restart_every`
steps the codes that no batch picked in that window, are re-initialised from random encoder
outputs of the current batch (as in SoundStream / Jukebox), which keeps small codebooks from
collapsing onto a few entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio

from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel


def codebook_statistics(counts: torch.Tensor) -> tuple[float, float]:
    """(fraction of codes used at least once, perplexity exp(H) of the usage distribution) from
    per-code counts (K,). The perplexity ranges from 1 (one code) to K (uniform use)."""
    counts = counts.double()
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    usage = float((counts > 0).double().mean())
    probs = counts[counts > 0] / total
    perplexity = float(torch.exp(-(probs * probs.log()).sum()))
    return usage, perplexity


class CodeUsage(Metric):
    """Counts how often each of `num_embeddings` codes appears; summed across processes."""

    full_state_update = False

    def __init__(self, num_embeddings: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_embeddings = num_embeddings
        self.add_state("counts", default=torch.zeros(num_embeddings, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, codes: torch.Tensor) -> None:
        self.counts += torch.bincount(codes.flatten(), minlength=self.num_embeddings)

    def compute(self) -> tuple[float, float]:
        return codebook_statistics(self.counts)


def _images_of(batch: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The (B, 3, H, W) image tensor of a batch: a tensor, the first item of a tuple/list
    (TensorDataset), or the "images" entry of a dict."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        return batch["images"]
    return batch[0]


class VQGANLitModule(pl.LightningModule):
    """Trains `self.vqgan` (a VQGANModel) on batches of float images (B, 3, R, R) in [0, 1]."""

    def __init__(
        self,
        config: Mapping | VQGANConfig,
        learning_rate: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        l1_weight: float = 1.0,
        l2_weight: float = 1.0,
        codebook_weight: float = 1.0,
        dead_code_restart_every: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(config, VQGANConfig):
            config = config.to_dict()
        vqgan_config = VQGANConfig(**{k: v for k, v in dict(config).items() if not str(k).startswith("_")})
        if dead_code_restart_every < 0:
            raise ValueError(f"dead_code_restart_every must be >= 0 (0 = off), got {dead_code_restart_every}")
        # Plain dicts, lists and numbers only: Lightning checkpoints must load with weights_only=True.
        self.save_hyperparameters({
            "config": vqgan_config.to_dict(), "learning_rate": float(learning_rate),
            "betas": tuple(float(b) for b in betas), "weight_decay": float(weight_decay),
            "l1_weight": float(l1_weight), "l2_weight": float(l2_weight),
            "codebook_weight": float(codebook_weight), "dead_code_restart_every": int(dead_code_restart_every),
        })
        self.vqgan = VQGANModel(vqgan_config)
        # Step at which each code was last picked by a training batch (-1: never); a buffer so it
        # survives resume. Never-used codes are restarted at the first check, which moves the tiny
        # uniform(-1/K, 1/K) initial codebook onto the encoder's outputs.
        self.register_buffer("code_last_used", torch.full((vqgan_config.num_embeddings,), -1, dtype=torch.long))
        self._latents_for_restart: torch.Tensor | None = None
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)  # images live in [0, 1] (spec §6)
        self.val_code_usage = CodeUsage(vqgan_config.num_embeddings)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions (B, 3, R, R), not clamped."""
        return self.vqgan(images)[0]

    def compute_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Total, reconstruction and VQ losses of a batch (straight-through estimator), plus the
        reconstructions, codes (B, h·w) and un-quantised latents."""
        latents = self.vqgan.encode_latents(images)
        z_q, codes, vq_loss = self.vqgan.quantize(latents, return_loss=True)
        reconstructions = self.vqgan.decode(z_q)
        losses = self._weighted_losses(images, reconstructions, vq_loss)
        return losses | {"codes": codes, "latents": latents, "reconstructions": reconstructions}

    def _weighted_losses(self, images: torch.Tensor, reconstructions: torch.Tensor,
                         vq_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """loss = rec_loss + codebook_weight·vq_loss, rec_loss = l1_weight·L1 + l2_weight·L2."""
        hp = self.hparams
        rec_loss = (hp.l1_weight * F.l1_loss(reconstructions, images)
                    + hp.l2_weight * F.mse_loss(reconstructions, images))
        loss = rec_loss + hp.codebook_weight * vq_loss
        return {"loss": loss, "rec_loss": rec_loss, "vq_loss": vq_loss}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = _images_of(batch)
        if self.hparams.dead_code_restart_every and self.global_step == 0 and batch_idx == 0:
            # Step 0: every code is unused, so all start from encoder outputs. Left at the tiny
            # uniform(±1/K) init, the codebook pulls the latents towards zero and a handful of
            # codes take every position (the decoder then sees no information at all).
            with torch.no_grad():
                self.restart_dead_codes(self.vqgan.encode_latents(images), window=0)
        out = self.compute_losses(images)
        n = images.shape[0]  # explicit: Lightning cannot infer it from a TensorDataset's tuple batch
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=n)
        self.log("train/rec_loss", out["rec_loss"], batch_size=n)
        self.log("train/vq_loss", out["vq_loss"], batch_size=n)
        if self.hparams.dead_code_restart_every:
            self.code_last_used[out["codes"].unique()] = self.global_step
            self._latents_for_restart = out["latents"].detach()
        return out["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # After the optimizer step, so the new codebook rows are not overwritten by this step's update.
        every = self.hparams.dead_code_restart_every
        # global_step has already been advanced past the step whose codes were recorded.
        if every and self.global_step % every == 0 and self._latents_for_restart is not None:
            restarted = self.restart_dead_codes(self._latents_for_restart, window=every)
            self.log("train/restarted_codes", float(restarted), batch_size=1)
        self._latents_for_restart = None

    @torch.no_grad()
    def restart_dead_codes(self, latents: torch.Tensor, window: int, step: int | None = None) -> int:
        """Re-initialise codes unused in steps [step − window, step) from random rows of `latents`
        (B, D, h, w); returns how many were restarted. `step` defaults to the number of optimizer
        steps done. Identical on every process."""
        step = self.global_step if step is None else step
        # Codes used on any process count as alive (a no-op without distributed training).
        last_used = self.trainer.strategy.reduce(self.code_last_used.clone(), reduce_op="max") \
            if self._trainer is not None and self.trainer.world_size > 1 else self.code_last_used
        dead = torch.nonzero(last_used < step - window).flatten()
        if dead.numel() == 0:
            return 0
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        picks = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        # Small noise so several restarts drawn from the same latent do not stay identical.
        new_rows = flat[picks] + 0.01 * flat.std() * torch.randn_like(flat[picks])
        if self._trainer is not None and self.trainer.world_size > 1:
            new_rows = self.trainer.strategy.broadcast(new_rows, src=0)
        weight = self.vqgan.quantize.embedding.weight
        weight[dead] = new_rows.to(weight.dtype)
        # As if last used just before `step`: a restarted code must be picked within the next window.
        self.code_last_used[dead] = step - 1
        self._reset_optimizer_rows(weight, dead)
        return int(dead.numel())

    def _reset_optimizer_rows(self, weight: torch.nn.Parameter, rows: torch.Tensor) -> None:
        """Zero Adam's moments of restarted rows so stale momentum does not drag them away."""
        if self._trainer is None:
            return
        for optimizer in self.trainer.optimizers:
            for value in optimizer.state.get(weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    value[rows] = 0

    def validation_step(self, batch, batch_idx: int) -> None:
        images = _images_of(batch)
        # What inference does (codes → codebook rows → decoder), not the straight-through sum,
        # whose float rounding differs slightly from the codebook rows.
        latents = self.vqgan.encode_latents(images)
        _, codes, vq_loss = self.vqgan.quantize(latents, return_loss=True)
        reconstructions = self.vqgan.decode(self.vqgan.quantize.get_codebook_entry(codes))
        out = self._weighted_losses(images, reconstructions, vq_loss)
        self.val_psnr.update(reconstructions.clamp(0.0, 1.0), images)
        self.val_code_usage.update(codes)
        self.log("val/loss", out["loss"], sync_dist=True, batch_size=images.shape[0])
        self.log("val/rec_loss", out["rec_loss"], sync_dist=True, batch_size=images.shape[0])

    def on_validation_epoch_end(self) -> None:
        usage, perplexity = self.val_code_usage.compute()
        self.log("val/psnr", self.val_psnr.compute(), prog_bar=True)
        self.log("val/codebook_usage", usage)
        self.log("val/code_perplexity", perplexity)
        self.val_psnr.reset()
        self.val_code_usage.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.AdamW(self.vqgan.parameters(), lr=hp.learning_rate, betas=tuple(hp.betas),
                                 weight_decay=hp.weight_decay)

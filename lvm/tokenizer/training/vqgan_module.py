"""VQGANLitModule: trains the open-muse VQGAN on [0, 1] images (the original ships no such code).

Generator loss, each term optional through its weight:

    loss = rec + perceptual_weight·LPIPS + codebook_weight·VQ + λ·L_G
    rec  = l1_weight·|x̂ − x| + l2_weight·(x̂ − x)² + mean_colour_weight·(mean(x̂) − mean(x))²
           + gray_saturation_weight·saturation(x̂ of the gray x)

- The mean-colour term compares each image's colour averaged over its pixels (per channel): a
  flat tint costs it in full, detail that averages out costs it nothing. The GroupNorms lose much of
  that colour (README, "The demo tokenizer"); the term weighs it up without changing what PSNR measures.
- The gray-saturation term is the mean of (max − min) / (max + 0.03) over the channels of each pixel of
  the reconstructions of gray inputs (all three channels equal), HSV saturation with a floor under the
  value: on near-black pixels a 1-level tint is saturation 0.5 or more, which MSE hardly sees. Gray
  analogy answers are scored by the same ratio without the floor (`lvm.eval.prompt_quality.mean_saturation`);
  the floor keeps the loss's gradient bounded where max → 0.

- VQ is the quantizer's ‖sg(z_q) − z‖² + β‖z_q − sg(z)‖² with the straight-through estimator
  (`VQGANModel.quantize(z, return_loss=True)`); with EMA codebook updates only the first term
  (the one that moves the encoder) remains.
- LPIPS (`lvm.tokenizer.training.perceptual`, VGG16) is read from local files `lpips_vgg_path` (torchvision
  VGG16 weights) and `lpips_heads_path` (lpips' vgg.pth; default: the copy inside torchmetrics).
  Nothing is downloaded: with perceptual_weight > 0 and no VGG path, a warning says the term is
  skipped and training goes on without it. The frozen network is left out of checkpoints.
- L_G is the patch discriminator's generator loss (`lvm.tokenizer.training.discriminator`, hinge or
  vanilla), weighted by taming's adaptive λ = disc_weight·‖∇_W(rec + perceptual)‖ / (‖∇_W L_G‖ + 1e-4)
  at the decoder's last conv W, and 0 before step `disc_start`. With disc_weight > 0 the module
  uses manual optimization with two AdamW optimizers (VQGAN, discriminator; same lr and betas); the
  discriminator is trained from `disc_start` on, on the same batch after the VQGAN step, and a batch
  still counts as one global step. Without a discriminator it keeps automatic optimization.

Codebook:
- `quantize_start` > 0: the first N steps train a plain autoencoder (the decoder reads the encoder's
  latents, no VQ loss); quantisation starts at step N from a codebook initialised on the latents the
  encoder has learned by then. From scratch, the VQ bottleneck hands the decoder near-constant codes
  for hundreds of steps and both ends learn slowly; the warm-up gives the codebook something to fit.
- `codebook_init`: "uniform" keeps the open-muse uniform(±1/K) init; "kmeans" sets the codebook at
  the step quantisation starts to k-means centres (k-means++ seeds, a few Lloyd iterations) of the
  encoder outputs of that batch and of the `kmeans_batches − 1` batches before it (with K codes and
  h·w latents per image, one small batch holds too few points for K centres). "keep" leaves the
  codebook as loaded: a warm start from a trained VQGAN (`fit_tokenizer(init_from=...)`).
- `codebook_ema_decay` > 0: VQ-VAE-2 style EMA updates after each step — per code an EMA of the
  number of latents assigned (cluster size) and of their sum; code = sum / Laplace-smoothed size.
  The codebook then gets no gradient (and is not in the optimizer).
- `dead_code_restart_every` > 0: at the first step every code (unless k-means set them), and then
  every N steps the codes that no batch picked in that window, are re-initialised from random
  encoder outputs of the current batch (as in SoundStream / Jukebox), which keeps small codebooks
  from collapsing onto a few entries.

`reference_channels` > 0: an initialisation (`lvm.tokenizer.training.reference_channels`) that lets the
encoder's and decoder's output GroupNorms pass absolute colour from the first step.

Validation logs loss, PSNR and SSIM (data range 1), codebook usage and code perplexity, and, when a
TensorBoardLogger is attached, a grid of originals (top row) above their reconstructions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lvm.tokenizer.grid import tile_images
from lvm.tokenizer.training.code_usage import CodeUsage
from lvm.tokenizer.training.discriminator import (
    NLayerDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from lvm.tokenizer.training.kmeans import kmeans
from lvm.tokenizer.training.options import VQGANTrainingOptions
from lvm.tokenizer.training.perceptual import load_lpips
from lvm.tokenizer.training.reference_channels import pin_reference_channels
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel
from lvm.training.optim import warmup_cosine_scheduler
from lvm.training.trainer_access import attached_trainer


def reconstruction_grid(
    originals: torch.Tensor, reconstructions: torch.Tensor, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """One (3, H', W') image: the originals (B, 3, H, W) in the top row, their reconstructions
    below, `padding` pixels of `pad_value` around and between images (make_grid's layout)."""
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"reconstruction_grid: {tuple(originals.shape)} originals vs {tuple(reconstructions.shape)} reconstructions"
        )
    return tile_images(
        torch.cat([originals, reconstructions]), columns=originals.shape[0], padding=padding, pad_value=pad_value
    )


def _images_of(batch: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The (B, 3, H, W) image tensor of a batch: a tensor, the first item of a tuple/list
    (TensorDataset), or the "images" entry of a dict."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        return batch["images"]
    return batch[0]


def gray_saturation(reconstructions: torch.Tensor, images: torch.Tensor, floor: float = 0.03) -> torch.Tensor:
    """Mean (max − min) / (max + floor) over the channels of the reconstructions' pixels, taken over the
    images whose input is gray (all channels equal to within half a level); 0 when the batch has none."""
    gray = (images.amax(dim=1) - images.amin(dim=1)).flatten(1).amax(dim=1) < 0.5 / 255
    if not gray.any():
        return reconstructions.new_zeros(())
    x = reconstructions[gray].clamp(0.0, 1.0)
    high, low = x.amax(dim=1), x.amin(dim=1)
    return ((high - low) / (high + floor)).mean()


def images_in_batch(batch: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> int:
    """Images in a batch (ThroughputMonitor's `batch_size_fn` for tokenizer training)."""
    return int(_images_of(batch).shape[0])


def _no_closure() -> None:
    return None


class VQGANLitModule(pl.LightningModule):
    """Trains `self.vqgan` (a VQGANModel) on batches of float images (B, 3, R, R) in [0, 1].

    `self.perceptual` (frozen LPIPS) and `self.discriminator` (PatchGAN) are None when off."""

    def __init__(
        self,
        config: Mapping | VQGANConfig,
        options: VQGANTrainingOptions | Mapping | None = None,
        **option_values: Any,
    ) -> None:
        """`config`: the VQGAN's architecture. `options`: how to train it (`VQGANTrainingOptions`); single
        fields may also be given as keywords (`learning_rate=1e-3`), which is how checkpoints written
        before the options object existed are read back."""
        super().__init__()
        if isinstance(config, VQGANConfig):
            config = config.to_dict()
        vqgan_config = VQGANConfig(**{k: v for k, v in dict(config).items() if not str(k).startswith("_")})
        if options is None:
            options = VQGANTrainingOptions()
        elif isinstance(options, Mapping):
            options = VQGANTrainingOptions(**options)
        unknown = sorted(set(option_values) - set(VQGANTrainingOptions.field_names()))
        if unknown:
            raise TypeError(f"VQGANLitModule: unknown options {unknown} (see VQGANTrainingOptions)")
        self.options = replace(options, **option_values) if option_values else options
        # Plain dicts, tuples and numbers only: Lightning checkpoints must load with weights_only=True.
        self.save_hyperparameters({"config": vqgan_config.to_dict(), "options": self.options.to_dict()})
        o = self.options
        self.vqgan = VQGANModel(vqgan_config)
        if o.reference_channels > 0:
            pin_reference_channels(self.vqgan, o.reference_channels)
        # Step at which each code was last picked by a training batch (-1: never); a buffer so it
        # survives resume. Never-used codes are restarted at the first check, which moves the tiny
        # uniform(-1/K, 1/K) initial codebook onto the encoder's outputs.
        self.register_buffer("code_last_used", torch.full((vqgan_config.num_embeddings,), -1, dtype=torch.long))
        if self.uses_ema:
            codebook = self.vqgan.quantize.embedding.weight
            codebook.requires_grad_(False)  # moved by the EMA only
            # Every code starts as if one latent equal to itself had been assigned to it: an unused
            # code then keeps its value (sum and size decay together) instead of being divided by ~0.
            self.register_buffer("ema_cluster_size", torch.ones(vqgan_config.num_embeddings))
            self.register_buffer("ema_embed_sum", codebook.detach().clone())

        self.perceptual = None
        if o.perceptual_weight > 0:
            if o.lpips_vgg_path is None:
                rank_zero_warn(
                    f"perceptual_weight={o.perceptual_weight} but no lpips_vgg_path is set: the perceptual "
                    f"(LPIPS) loss is skipped and training goes on without it. Nothing is downloaded; "
                    f"point lpips_vgg_path at torchvision's VGG16 weights (vgg16-397923af.pth)."
                )
            else:
                self.perceptual = load_lpips(o.lpips_vgg_path, o.lpips_heads_path)
        self.discriminator = (
            NLayerDiscriminator(vqgan_config.num_channels, o.disc_channels, o.disc_layers)
            if o.disc_weight > 0
            else None
        )
        # Two optimizers need manual optimization; without a discriminator nothing changes.
        self.automatic_optimization = self.discriminator is None

        self._pending_codebook_update: tuple[torch.Tensor, torch.Tensor] | None = None
        self._kmeans_pool: list[torch.Tensor] = []  # latents of the batches just before quantisation starts
        self._codebook_initialised = False  # once per run: the micro-batches of one accumulated step share its number
        self._logged_samples: tuple[torch.Tensor, torch.Tensor] | None = None
        self.val_psnr = PeakSignalNoiseRatio(
            data_range=1.0
        )  # images live in [0, 1] (the original's evaluation/vqlm_demo/vqvae_muse.py, open-muse's VQGANModel)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.val_code_usage = CodeUsage(vqgan_config.num_embeddings)

    @property
    def uses_ema(self) -> bool:
        """Whether the codebook follows EMA updates instead of its gradient."""
        return self.options.codebook_ema_decay > 0

    def gan_active(self, step: int) -> bool:
        """Whether the GAN terms count (and the discriminator trains) at optimizer step `step`."""
        return self.discriminator is not None and step >= self.options.disc_start

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions (B, 3, R, R), not clamped."""
        return self.vqgan(images)[0]

    # --- losses ----------------------------------------------------------------------------------

    def quantizes(self, step: int) -> bool:
        """Whether optimizer step `step` runs through the quantizer (False during the autoencoder warm-up)."""
        return step >= self.options.quantize_start

    def compute_losses(self, images: torch.Tensor, step: int | None = None) -> dict[str, torch.Tensor]:
        """Total, reconstruction and VQ losses of a batch (straight-through estimator), plus the
        reconstructions, codes (B, h·w) and un-quantised latents. Before `quantize_start` the
        decoder reads the latents themselves (VQ loss 0, no codes). With a discriminator and a
        `step` ≥ disc_start, also the generator loss `g_loss` and its adaptive weight `d_weight`
        (which need gradients: call it with grad enabled)."""
        latents = self.vqgan.encode_latents(images)
        if step is not None and not self.quantizes(step):
            z_q, codes, vq_loss = latents, None, latents.new_zeros(())
        else:
            z_q, codes, vq_loss = self.vqgan.quantize(latents, return_loss=True)
            if self.uses_ema:
                # Only the term that moves the encoder: the codebook follows the EMA, not a gradient.
                vq_loss = F.mse_loss(latents, z_q.detach())
        reconstructions = self.vqgan.decode(z_q)
        losses = self._weighted_losses(images, reconstructions, vq_loss)
        if step is not None and self.gan_active(step):
            g_loss = generator_loss(self.discriminator(reconstructions), self.options.disc_loss)
            d_weight = adaptive_weight(
                losses["nll"], g_loss, self.vqgan.decoder.conv_out.weight, self.options.disc_weight
            )
            losses["loss"] = losses["loss"] + d_weight * g_loss
            losses |= {"g_loss": g_loss, "d_weight": d_weight}
        return losses | {"codes": codes, "latents": latents, "reconstructions": reconstructions}

    def _weighted_losses(
        self, images: torch.Tensor, reconstructions: torch.Tensor, vq_loss: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """loss = nll + codebook_weight·vq_loss, nll = rec_loss (+ perceptual_weight·LPIPS),
        rec_loss = l1_weight·L1 + l2_weight·L2 (+ mean_colour_weight·mean-colour L2)."""
        hp = self.options
        rec_loss = hp.l1_weight * F.l1_loss(reconstructions, images) + hp.l2_weight * F.mse_loss(
            reconstructions, images
        )
        out = {"vq_loss": vq_loss}
        if hp.mean_colour_weight > 0:
            out["mean_colour_loss"] = F.mse_loss(reconstructions.mean(dim=(-2, -1)), images.mean(dim=(-2, -1)))
            rec_loss = rec_loss + hp.mean_colour_weight * out["mean_colour_loss"]
        if hp.gray_saturation_weight > 0:
            out["gray_saturation_loss"] = gray_saturation(reconstructions, images)
            rec_loss = rec_loss + hp.gray_saturation_weight * out["gray_saturation_loss"]
        out["rec_loss"] = rec_loss
        nll = rec_loss
        if self.perceptual is not None:
            out["perceptual_loss"] = self.perceptual(reconstructions, images).mean()
            nll = rec_loss + hp.perceptual_weight * out["perceptual_loss"]
        return out | {"nll": nll, "loss": nll + hp.codebook_weight * vq_loss}

    # --- training --------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = _images_of(batch)
        step = self.global_step  # optimizer steps done before this batch
        start = self.options.quantize_start
        if start - self.options.kmeans_batches < step < start:
            with torch.no_grad():
                self._kmeans_pool.append(self.vqgan.encode_latents(images).detach())
        if step == start and not self._codebook_initialised:
            self.initialise_codebook(images)
            self._codebook_initialised = True
        out = self.compute_losses(images, step=step) if self.automatic_optimization else self._manual_step(images, step)
        n = images.shape[0]  # explicit: Lightning cannot infer it from a TensorDataset's tuple batch
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=n)
        for name in (
            "rec_loss",
            "vq_loss",
            "mean_colour_loss",
            "gray_saturation_loss",
            "perceptual_loss",
            "g_loss",
            "d_weight",
            "d_loss",
            "logits_real",
            "logits_fake",
        ):
            if name in out:
                self.log(f"train/{name}", out[name], batch_size=n)
        if out["codes"] is None:  # autoencoder warm-up: no codebook yet
            return out["loss"]
        if self.options.dead_code_restart_every:
            self.code_last_used[out["codes"].unique()] = step
        if self.options.dead_code_restart_every or self.uses_ema:
            self._pending_codebook_update = (out["latents"].detach(), out["codes"])
        return out["loss"]

    def _manual_step(self, images: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One VQGAN step, then (from disc_start on) one discriminator step on the same batch."""
        opt_vqgan, opt_disc = self.optimizers()
        with self.toggled_optimizer(opt_vqgan):  # no gradients into the discriminator here
            out = self.compute_losses(images, step=step)
            opt_vqgan.zero_grad()
            self.manual_backward(out["loss"])
            opt_vqgan.step()
        if self.gan_active(step):
            with self.toggled_optimizer(opt_disc):
                logits_real = self.discriminator(images)
                logits_fake = self.discriminator(out["reconstructions"].detach())
                d_loss = discriminator_loss(logits_real, logits_fake, self.options.disc_loss)
                opt_disc.zero_grad()
                self.manual_backward(d_loss)
                # Through the strategy (precision plugin, hooks) but not `opt_disc.step()`: in manual
                # optimization every LightningOptimizer.step advances global_step (Lightning issue
                # 17958), which would make max_steps, checkpoints and disc_start count twice per batch.
                self.trainer.strategy.optimizer_step(opt_disc.optimizer, closure=_no_closure)
            out |= {
                "d_loss": d_loss.detach(),
                "logits_real": logits_real.detach().mean(),
                "logits_fake": logits_fake.detach().mean(),
            }
        out["loss"] = out["loss"].detach()
        return out

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # After the optimizer step, so the new codebook rows are not overwritten by this step's update.
        pending, self._pending_codebook_update = self._pending_codebook_update, None
        if pending is None:
            return
        latents, codes = pending
        if self.uses_ema:
            self.ema_update_codebook(latents, codes)
        every = self.options.dead_code_restart_every
        # global_step has already been advanced past the step whose codes were recorded.
        if every and self.global_step % every == 0:
            restarted = self.restart_dead_codes(latents, window=every)
            self.log("train/restarted_codes", float(restarted), batch_size=1)

    # --- codebook --------------------------------------------------------------------------------

    @torch.no_grad()
    def initialise_codebook(self, images: torch.Tensor) -> None:
        """Codebook init at the step quantisation starts, from this batch's encoder outputs (and, for
        k-means, the pooled latents of the batches before it): k-means centres, or (with restarts on)
        random latents — left at the tiny uniform(±1/K) init, the codebook pulls the latents towards
        zero and a handful of codes take every position."""
        pool, self._kmeans_pool = self._kmeans_pool, []
        if self.options.codebook_init == "keep":
            return
        latents = self.vqgan.encode_latents(images)
        if self.options.codebook_init == "kmeans":
            self.kmeans_init_codebook(torch.cat([*pool, latents]))
        elif self.options.dead_code_restart_every:
            self.restart_dead_codes(latents, window=0)

    @torch.no_grad()
    def kmeans_init_codebook(self, latents: torch.Tensor) -> None:
        """Set every code to a k-means centre of the latents (B, D, h, w); identical on every process."""
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).float()
        centers = kmeans(flat, self.vqgan.config.num_embeddings, self.options.kmeans_iterations)
        if self._distributed:
            centers = self.trainer.strategy.broadcast(centers, src=0)
        self._write_codebook_rows(torch.arange(centers.shape[0], device=centers.device), centers)

    @torch.no_grad()
    def ema_update_codebook(self, latents: torch.Tensor, codes: torch.Tensor) -> None:
        """VQ-VAE-2 EMA step from latents (B, D, h, w) and their codes (B, h·w), with d = decay:
        size_k ← d·size_k + (1 − d)·n_k,  sum_k ← d·sum_k + (1 − d)·Σ_{z→k} z,
        code_k = sum_k / ((size_k + ε) / (Σ size + K·ε) · Σ size)   (Laplace smoothing).
        Counts and sums are added over processes first, so every process keeps the same codebook."""
        decay, eps = self.options.codebook_ema_decay, self.options.codebook_ema_eps
        weight = self.vqgan.quantize.embedding.weight
        k = weight.shape[0]
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).float()
        codes = codes.flatten()
        counts = torch.bincount(codes, minlength=k).float()
        sums = torch.zeros(k, flat.shape[1], device=flat.device).index_add_(0, codes, flat)
        if self._distributed:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        self.ema_cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + eps) / (total + k * eps) * total
        weight.copy_((self.ema_embed_sum / smoothed.unsqueeze(1)).to(weight.dtype))

    @torch.no_grad()
    def restart_dead_codes(self, latents: torch.Tensor, window: int, step: int | None = None) -> int:
        """Re-initialise codes unused in steps [step − window, step) from random rows of `latents`
        (B, D, h, w); returns how many were restarted. `step` defaults to the number of optimizer
        steps done. Identical on every process."""
        step = self.global_step if step is None else step
        # Codes used on any process count as alive (a no-op without distributed training).
        last_used = (
            self.trainer.strategy.reduce(self.code_last_used.clone(), reduce_op="max")
            if self._distributed
            else self.code_last_used
        )
        dead = torch.nonzero(last_used < step - window).flatten()
        if dead.numel() == 0:
            return 0
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        picks = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        # Small noise so several restarts drawn from the same latent do not stay identical.
        new_rows = flat[picks] + 0.01 * flat.std() * torch.randn_like(flat[picks])
        if self._distributed:
            new_rows = self.trainer.strategy.broadcast(new_rows, src=0)
        self._write_codebook_rows(dead, new_rows)
        # As if last used just before `step`: a restarted code must be picked within the next window.
        self.code_last_used[dead] = step - 1
        return int(dead.numel())

    @property
    def _distributed(self) -> bool:
        trainer = attached_trainer(self)
        return trainer is not None and trainer.world_size > 1

    def _write_codebook_rows(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Set codebook rows and forget their history: Adam's moments (stale momentum would drag
        them away) and, with EMA, their cluster statistics (restarted as one latent each)."""
        weight = self.vqgan.quantize.embedding.weight
        weight[rows] = values.to(weight.dtype)
        if self.uses_ema:
            self.ema_cluster_size[rows] = 1.0
            self.ema_embed_sum[rows] = values.to(self.ema_embed_sum.dtype)
        if attached_trainer(self) is None:
            return
        for optimizer in self.trainer.optimizers:
            for value in optimizer.state.get(weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    value[rows] = 0

    # --- validation ------------------------------------------------------------------------------

    def validation_step(self, batch, batch_idx: int) -> None:
        images = _images_of(batch)
        # What inference does (codes → codebook rows → decoder), not the straight-through sum,
        # whose float rounding differs slightly from the codebook rows.
        latents = self.vqgan.encode_latents(images)
        _, codes, vq_loss = self.vqgan.quantize(latents, return_loss=True)
        reconstructions = self.vqgan.decode(self.vqgan.quantize.get_codebook_entry(codes))
        out = self._weighted_losses(images, reconstructions, vq_loss)
        clamped = reconstructions.float().clamp(0.0, 1.0)
        self.val_psnr.update(clamped, images.float())
        self.val_ssim.update(clamped, images.float())
        self.val_code_usage.update(codes)
        n = images.shape[0]
        self.log("val/loss", out["loss"], sync_dist=True, batch_size=n)
        self.log("val/rec_loss", out["rec_loss"], sync_dist=True, batch_size=n)
        if "perceptual_loss" in out:
            self.log("val/perceptual_loss", out["perceptual_loss"], sync_dist=True, batch_size=n)
        if batch_idx == 0 and self.options.num_logged_images:
            keep = self.options.num_logged_images
            self._logged_samples = (images[:keep].detach().float().cpu(), clamped[:keep].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        usage, perplexity = self.val_code_usage.compute()
        self.log("val/psnr", self.val_psnr.compute(), prog_bar=True)
        self.log("val/ssim", self.val_ssim.compute())
        self.log("val/codebook_usage", usage)
        self.log("val/code_perplexity", perplexity)
        self.val_psnr.reset()
        self.val_ssim.reset()
        self.val_code_usage.reset()
        samples, self._logged_samples = self._logged_samples, None
        if samples is not None and self.trainer.is_global_zero:
            self._log_reconstructions(*samples)

    def _log_reconstructions(self, originals: torch.Tensor, reconstructions: torch.Tensor) -> None:
        """Originals above reconstructions, one image per TensorBoard logger (others are skipped)."""
        grid = None
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                grid = reconstruction_grid(originals, reconstructions) if grid is None else grid
                logger.experiment.add_image("val/reconstructions", grid, global_step=self.global_step)

    # --- optimizers and checkpoints --------------------------------------------------------------

    def configure_optimizers(self):
        """AdamW over the VQGAN (minus an EMA-driven codebook), plus one over the discriminator."""
        hp = self.options
        parameters = [p for p in self.vqgan.parameters() if p.requires_grad]
        opt_vqgan = torch.optim.AdamW(
            parameters, lr=hp.learning_rate, betas=tuple(hp.betas), weight_decay=hp.weight_decay
        )
        if self.discriminator is None:
            if not hp.lr_decay_steps:
                return opt_vqgan
            # Sized from the config, not trainer.estimated_stepping_batches (Lightning issue 20550).
            schedule = warmup_cosine_scheduler(opt_vqgan, hp.lr_warmup_steps, hp.lr_decay_steps, hp.end_lr)
            return {"optimizer": opt_vqgan, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        opt_disc = torch.optim.AdamW(
            self.discriminator.parameters(), lr=hp.learning_rate, betas=tuple(hp.betas), weight_decay=hp.weight_decay
        )
        return [opt_vqgan, opt_disc]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The frozen LPIPS network is rebuilt from its files: keep its 14.7 M weights out of checkpoints.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("perceptual.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # ... and put this module's own copy back so strict loading finds every key.
        if self.perceptual is not None and "state_dict" in checkpoint:
            checkpoint["state_dict"].update({f"perceptual.{k}": v for k, v in self.perceptual.state_dict().items()})

"""VQGANLitModule: training lowers the reconstruction loss, validation metrics against formulas,
dead-code restart, k-means init and EMA codebook against their formulas, perceptual loss, the
discriminator's schedule under manual optimization, TensorBoard images, checkpoints that load with
weights_only=True."""

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lvm.tokenizer.training.code_usage import codebook_statistics
from lvm.tokenizer.training.kmeans import kmeans
from lvm.tokenizer.training.options import VQGANTrainingOptions
from lvm.tokenizer.training.vqgan_module import VQGANLitModule, reconstruction_grid
from tests.tokenizer.conftest import tiny_config


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Colour gradients with a bright square: easy to learn, so a few steps show progress."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    images = []
    for _ in range(n):
        start, end = torch.rand(3, 1, 1, generator=generator), torch.rand(3, 1, 1, generator=generator)
        image = start + (end - start) * ramp.view(1, 1, size)
        image = image.expand(3, size, size).clone()
        y, x = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        image[:, y : y + 8, x : x + 8] = torch.rand(3, 1, 1, generator=generator)
        images.append(image)
    return torch.stack(images)


def trainer(max_steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_thirty_steps_lower_the_reconstruction_loss(config):
    torch.manual_seed(0)
    images = smooth_images(8)
    module = VQGANLitModule(config.to_dict(), learning_rate=2e-3, betas=(0.9, 0.99), dead_code_restart_every=10)
    with torch.no_grad():
        before = float(module.compute_losses(images)["rec_loss"])
    loader = DataLoader(TensorDataset(images), batch_size=4, shuffle=True)
    trainer(30, limit_val_batches=0).fit(module, loader)
    assert module.global_step == 30
    with torch.no_grad():
        after = module.compute_losses(images)
    assert float(after["rec_loss"]) < 0.7 * before
    assert torch.isfinite(after["vq_loss"])
    logged = module.trainer.callback_metrics
    assert {"train/loss", "train/rec_loss", "train/vq_loss"} <= set(logged)
    assert float(logged["train/loss"]) >= float(logged["train/rec_loss"])


def test_training_loss_is_l1_plus_l2_plus_vq(config):
    module = VQGANLitModule(config.to_dict(), l1_weight=0.5, l2_weight=2.0, codebook_weight=3.0)
    images = smooth_images(2)
    torch.manual_seed(0)
    out = module.compute_losses(images)
    x_hat, _, _, vq = module.vqgan(images, return_loss=True)
    assert torch.allclose(out["rec_loss"], 0.5 * F.l1_loss(x_hat, images) + 2.0 * F.mse_loss(x_hat, images))
    assert torch.allclose(out["vq_loss"], vq)
    assert torch.allclose(out["loss"], out["rec_loss"] + 3.0 * vq)
    out["loss"].backward()  # gradients reach the encoder through the straight-through estimator
    assert module.vqgan.encoder.conv_in.weight.grad.abs().sum() > 0
    assert module.vqgan.quantize.embedding.weight.grad.abs().sum() > 0


def test_mean_colour_term_weighs_each_images_average_colour(config):
    module = VQGANLitModule(config.to_dict(), l1_weight=0.0, l2_weight=1.0, mean_colour_weight=4.0)
    images = smooth_images(3)
    # A flat tint of (+0.1, 0, -0.2) costs the term its full square; zero-mean detail costs it nothing.
    detail = torch.full(images.shape[-2:], 0.05)
    detail[::2] = -0.05  # alternating rows: every channel's average is unchanged
    tinted = images + torch.tensor([0.1, 0.0, -0.2]).view(1, 3, 1, 1)
    vq = torch.zeros(())
    expected_tint = sum((0.1**2, 0.0, 0.2**2)) / 3  # mean over images and channels of the squared mean shift
    out = module._weighted_losses(images, tinted, vq)
    assert float(out["mean_colour_loss"]) == pytest.approx(expected_tint, rel=1e-5)
    assert float(out["rec_loss"]) == pytest.approx(expected_tint + 4.0 * expected_tint, rel=1e-5)
    out = module._weighted_losses(images, images + detail, vq)
    assert float(out["mean_colour_loss"]) == pytest.approx(0.0, abs=1e-12)
    assert "mean_colour_loss" not in VQGANLitModule(config.to_dict())._weighted_losses(images, tinted, vq)
    with pytest.raises(ValueError, match="mean_colour_weight must be >= 0"):
        VQGANLitModule(config.to_dict(), mean_colour_weight=-1.0)


def test_gray_saturation_term_counts_colour_in_reconstructions_of_gray_images_only(config):
    module = VQGANLitModule(config.to_dict(), l1_weight=0.0, l2_weight=1.0, gray_saturation_weight=0.5)
    colour = smooth_images(2)
    gray = colour.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).clone()  # R = G = B
    images = torch.cat([colour, gray])
    tint = torch.tensor([0.02, 0.0, -0.02]).view(1, 3, 1, 1)
    reconstructions = images + tint
    # Only the two gray inputs count, pixel by pixel: (max − min) / (max + 0.03) of their reconstructions.
    x = reconstructions[2:].clamp(0, 1)
    high, low = x.amax(dim=1), x.amin(dim=1)
    expected = float(((high - low) / (high + 0.03)).mean())
    vq = torch.zeros(())
    out = module._weighted_losses(images, reconstructions, vq)
    assert float(out["gray_saturation_loss"]) == pytest.approx(expected, rel=1e-5) and expected > 0.02
    mse = float(F.mse_loss(reconstructions, images))
    assert float(out["rec_loss"]) == pytest.approx(mse + 0.5 * expected, rel=1e-5)
    # Darker pixels weigh more: the same tint on a darker gray image costs more.
    darker = module._weighted_losses(images * 0.3, images * 0.3 + tint, vq)["gray_saturation_loss"]
    assert float(darker) > 2 * expected
    # A colourless reconstruction, or a batch without gray inputs, costs nothing.
    assert float(module._weighted_losses(images, images, vq)["gray_saturation_loss"]) == pytest.approx(0.0, abs=1e-7)
    assert float(module._weighted_losses(colour, colour + tint, vq)["gray_saturation_loss"]) == 0.0
    assert "gray_saturation_loss" not in VQGANLitModule(config.to_dict())._weighted_losses(images, reconstructions, vq)
    with pytest.raises(ValueError, match="gray_saturation_weight must be >= 0"):
        VQGANLitModule(config.to_dict(), gray_saturation_weight=-1.0)


def test_validation_logs_psnr_usage_and_perplexity_against_formulas(model, config):
    module = VQGANLitModule(config.to_dict())
    module.vqgan.load_state_dict(model.state_dict())
    images = smooth_images(6)
    metrics = trainer(1).validate(module, DataLoader(TensorDataset(images), batch_size=4), verbose=False)[0]
    with torch.no_grad():
        codes = model.get_code(images)
        x_hat = model.decode_code(codes).clamp(0, 1)
    mse = float(F.mse_loss(x_hat, images))
    assert metrics["val/psnr"] == pytest.approx(10 * math.log10(1.0 / mse), abs=1e-3)  # data range 1: [0, 1] images
    counts = torch.bincount(codes.flatten(), minlength=config.num_embeddings).double()
    p = counts[counts > 0] / counts.sum()
    assert metrics["val/codebook_usage"] == pytest.approx(float((counts > 0).double().mean()))
    assert metrics["val/code_perplexity"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-5)


def test_codebook_statistics():
    assert codebook_statistics(torch.tensor([2, 2, 0, 0])) == pytest.approx((0.5, 2.0))
    assert codebook_statistics(torch.tensor([5, 0, 0, 0])) == pytest.approx((0.25, 1.0))
    assert codebook_statistics(torch.zeros(4, dtype=torch.long)) == (0.0, 0.0)


def test_dead_codes_are_restarted_from_encoder_outputs(config):
    torch.manual_seed(0)
    module = VQGANLitModule(config.to_dict(), dead_code_restart_every=5)
    weight = module.vqgan.quantize.embedding.weight
    before = weight.detach().clone()
    alive = torch.arange(0, 64, 2)
    module.code_last_used[alive] = 0  # used at step 0; the odd codes were never used
    latents = torch.randn(2, config.quantized_embed_dim, 4, 4) * 3
    restarted = module.restart_dead_codes(latents, window=5, step=5)
    assert restarted == 32
    assert torch.equal(weight[alive], before[alive])
    flat = latents.permute(0, 2, 3, 1).reshape(-1, config.quantized_embed_dim)
    dead = torch.arange(1, 64, 2)
    # Each restarted row is one of the latents plus a little noise.
    nearest = torch.cdist(weight.detach()[dead], flat).min(dim=1).values
    assert float(nearest.max()) < 0.1 * float(flat.norm(dim=1).mean())
    assert torch.equal(module.code_last_used[dead], torch.full((32,), 4))
    # Four steps later only the codes last used at step 0 are stale; the restarted ones count as fresh.
    restarted_rows = weight.detach()[dead].clone()
    assert module.restart_dead_codes(latents, window=5, step=9) == 32
    assert torch.equal(weight.detach()[dead], restarted_rows)


def test_restart_runs_inside_training_and_unused_codes_move(config):
    torch.manual_seed(0)
    module = VQGANLitModule(config.to_dict(), dead_code_restart_every=3)
    initial = module.vqgan.quantize.embedding.weight.detach().clone()
    assert float(initial.abs().max()) <= 1 / config.num_embeddings
    trainer(3, limit_val_batches=0).fit(module, DataLoader(TensorDataset(smooth_images(4)), batch_size=4))
    assert float(module.trainer.callback_metrics["train/restarted_codes"]) > 0
    # Step 0 moved every code from the tiny uniform(±1/K) init onto the encoder's outputs.
    moved = (module.vqgan.quantize.embedding.weight.detach() - initial).abs().amax(dim=1)
    assert bool((moved > 3.0 / config.num_embeddings).all())
    # Without restarts the codebook keeps its init scale (only the β-weighted codebook term moves it).
    plain = VQGANLitModule(config.to_dict(), dead_code_restart_every=0)
    trainer(1, limit_val_batches=0).fit(plain, DataLoader(TensorDataset(smooth_images(4)), batch_size=4))
    assert float(plain.vqgan.quantize.embedding.weight.detach().abs().max()) < 0.1
    assert int((plain.code_last_used >= 0).sum()) == 0  # usage is only tracked for restarts


def test_hyperparameters_and_checkpoint_load_with_weights_only(tmp_path, config):
    module = VQGANLitModule(config, learning_rate=1e-3, dead_code_restart_every=7)
    assert module.hparams["config"] == config.to_dict() and module.hparams["options"]["dead_code_restart_every"] == 7
    assert module.hparams["options"]["betas"] == (0.5, 0.9)
    fit = trainer(1, limit_val_batches=0)
    fit.fit(module, DataLoader(TensorDataset(smooth_images(2)), batch_size=2))
    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["hyper_parameters"]["options"]["learning_rate"] == 1e-3
    restored = VQGANLitModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    for key, value in module.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert restored.vqgan.config == config and restored.options == module.options
    # Checkpoints written before the options object held every option flat beside the config.
    raw["hyper_parameters"] = {"config": config.to_dict(), **module.options.to_dict()}
    torch.save(raw, tmp_path / "flat.ckpt")
    older = VQGANLitModule.load_from_checkpoint(tmp_path / "flat.ckpt", map_location="cpu", weights_only=True)
    assert older.options == module.options and older.options.dead_code_restart_every == 7


def test_options_are_checked_and_named():
    with pytest.raises(ValueError, match=r"kmeans_batches must be >= 1, got 0; disc_loss must be one of"):
        VQGANTrainingOptions(kmeans_batches=0, disc_loss="square")
    with pytest.raises(TypeError, match=r"unknown options \['learning_rat'\]"):
        VQGANLitModule(tiny_config(), learning_rat=1e-3)
    options = VQGANTrainingOptions(betas=[0.9, 0.99], lpips_vgg_path=Path("/w/vgg.pth"))  # as Hydra passes them
    assert options.betas == (0.9, 0.99) and options.lpips_vgg_path == "/w/vgg.pth"


# --- codebook init and EMA --------------------------------------------------------------------------


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    points = means.repeat_interleave(50, dim=0) + 0.1 * torch.randn(200, 2, generator=generator)
    centers = kmeans(points, 4, iterations=10, generator=torch.Generator().manual_seed(3))
    nearest = torch.cdist(means, centers).min(dim=1).values
    assert float(nearest.max()) < 0.1  # one centre on each cluster's mean
    few = kmeans(points[:3], 8, iterations=2, generator=generator)  # fewer points than centres
    assert few.shape == (8, 2) and torch.isfinite(few).all()


def test_kmeans_init_puts_codes_on_the_latents_and_uses_more_codes_than_uniform(config):
    torch.manual_seed(0)
    module = VQGANLitModule(config.to_dict(), codebook_init="kmeans", kmeans_iterations=10)
    quantize = module.vqgan.quantize
    with torch.no_grad():
        latents = module.vqgan.encode_latents(smooth_images(8))  # 8 × 64 latents for 64 codes
        flat = latents.permute(0, 2, 3, 1).reshape(-1, config.quantized_embed_dim)

        def usage_and_error():
            codes = quantize.get_code(latents)
            error = F.mse_loss(quantize.get_codebook_entry(codes), latents)
            return codebook_statistics(torch.bincount(codes.flatten(), minlength=64))[0], float(error)

        uniform_usage, uniform_error = usage_and_error()
        torch.manual_seed(5)
        module.kmeans_init_codebook(latents)
        torch.manual_seed(5)
        expected = kmeans(flat, config.num_embeddings, iterations=10)
        kmeans_usage, kmeans_error = usage_and_error()
    assert torch.equal(quantize.embedding.weight, expected)
    assert kmeans_usage > uniform_usage and kmeans_usage >= 0.9
    assert kmeans_error < 0.5 * uniform_error
    # Every code sits inside the cloud of latents, not at the tiny uniform(±1/K) init around zero.
    assert float(torch.cdist(quantize.embedding.weight, flat).min(dim=1).values.max()) < float(flat.norm(dim=1).mean())


def test_ema_moves_a_code_towards_the_mean_of_its_latents_by_the_formula(config):
    torch.manual_seed(0)
    decay, eps = 0.9, 1e-5
    module = VQGANLitModule(config.to_dict(), codebook_ema_decay=decay, codebook_ema_eps=eps)
    weight = module.vqgan.quantize.embedding.weight
    assert not weight.requires_grad
    assert all(p is not weight for group in module.configure_optimizers().param_groups for p in group["params"])
    with torch.no_grad():
        weight.normal_(0.0, 1.0)
        module.ema_cluster_size.copy_(torch.ones(64))
        module.ema_embed_sum.copy_(weight)
    old = weight.detach().clone()
    latents = torch.randn(2, config.quantized_embed_dim, 4, 4)
    codes = module.vqgan.quantize.get_code(latents)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, config.quantized_embed_dim)
    counts = torch.bincount(codes.flatten(), minlength=64).float()
    sums = torch.stack([flat[codes.flatten() == k].sum(dim=0) for k in range(64)])
    size = decay * 1.0 + (1 - decay) * counts
    total = size.sum()
    smoothed = (size + eps) / (total + 64 * eps) * total
    expected = (decay * old + (1 - decay) * sums) / smoothed.unsqueeze(1)

    module.ema_update_codebook(latents, codes)
    assert torch.allclose(weight, expected, atol=1e-6)
    k = int(counts.argmax())
    mean_k = sums[k] / counts[k]
    assert (weight[k] - mean_k).norm() < (old[k] - mean_k).norm()  # the busiest code moved toward its latents
    # With EMA the VQ loss keeps only the encoder's term and the codebook gets no gradient.
    out = module.compute_losses(smooth_images(2))
    z_q = module.vqgan.quantize.get_codebook_entry(out["codes"])
    assert torch.allclose(out["vq_loss"], F.mse_loss(out["latents"], z_q))
    out["loss"].backward()
    assert weight.grad is None


def test_kmeans_ema_and_restarts_run_inside_training_and_resume(tmp_path, config):
    torch.manual_seed(0)
    module = VQGANLitModule(config.to_dict(), codebook_init="kmeans", codebook_ema_decay=0.9, dead_code_restart_every=2)
    initial = module.vqgan.quantize.embedding.weight.detach().clone()
    fit = trainer(2, limit_val_batches=0)
    fit.fit(module, DataLoader(TensorDataset(smooth_images(4)), batch_size=4))
    codebook = module.vqgan.quantize.embedding.weight.detach()
    assert float((codebook - initial).abs().amax(dim=1).min()) > 3.0 / config.num_embeddings  # all codes moved
    assert "train/restarted_codes" in module.trainer.callback_metrics
    path = tmp_path / "ema.ckpt"
    fit.save_checkpoint(path)
    restored = VQGANLitModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert torch.equal(restored.ema_embed_sum, module.ema_embed_sum)


# --- perceptual loss, discriminator -----------------------------------------------------------------


def test_perceptual_loss_enters_the_loss_and_stays_out_of_checkpoints(tmp_path, config, lpips_files):
    vgg_path, heads_path = lpips_files
    module = VQGANLitModule(
        config.to_dict(),
        perceptual_weight=0.5,
        lpips_vgg_path=str(vgg_path),
        lpips_heads_path=str(heads_path),
        l2_weight=0.0,
    )
    images = smooth_images(2)
    out = module.compute_losses(images)
    lpips = module.perceptual(out["reconstructions"], images).mean()
    assert float(lpips) > 0 and torch.allclose(out["perceptual_loss"], lpips)
    assert torch.allclose(out["loss"], out["rec_loss"] + 0.5 * lpips + out["vq_loss"])
    out["loss"].backward()
    assert module.vqgan.decoder.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.perceptual.parameters())

    fit = trainer(1, limit_val_batches=0)
    fit.fit(module, DataLoader(TensorDataset(smooth_images(2)), batch_size=2))
    assert module.perceptual.training is False  # .train() by Lightning left LPIPS in eval mode
    path = tmp_path / "perceptual.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    assert not any(k.startswith("perceptual.") for k in saved)
    restored = VQGANLitModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert torch.equal(restored.perceptual.lin0.model[1].weight, module.perceptual.lin0.model[1].weight)


def test_perceptual_weight_without_a_path_warns_and_trains_without_it(config):
    with pytest.warns(UserWarning, match="perceptual \\(LPIPS\\) loss is skipped"):
        module = VQGANLitModule(config.to_dict(), perceptual_weight=1.0)
    assert module.perceptual is None
    assert "perceptual_loss" not in module.compute_losses(smooth_images(1))


class DiscriminatorSnapshots(pl.Callback):
    """The discriminator's parameters after every training batch."""

    def __init__(self) -> None:
        self.after_batch = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after_batch.append([p.detach().clone() for p in module.discriminator.parameters()])


def test_discriminator_trains_from_disc_start_and_resumes(tmp_path, config):
    torch.manual_seed(0)
    module = VQGANLitModule(
        config.to_dict(), learning_rate=1e-3, disc_weight=0.5, disc_start=2, disc_channels=8, disc_layers=2
    )
    assert not module.automatic_optimization
    initial = [p.detach().clone() for p in module.discriminator.parameters()]
    snapshots = DiscriminatorSnapshots()
    loader = DataLoader(TensorDataset(smooth_images(4)), batch_size=2)
    fit = trainer(4, limit_val_batches=0, callbacks=[snapshots])
    fit.fit(module, loader)
    assert module.global_step == 4  # one step per batch although two optimizers stepped

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    assert same(snapshots.after_batch[0], initial) and same(snapshots.after_batch[1], initial)
    assert not same(snapshots.after_batch[2], initial) and not same(snapshots.after_batch[3], snapshots.after_batch[2])
    logged = module.trainer.callback_metrics
    assert {"train/g_loss", "train/d_weight", "train/d_loss"} <= set(logged)

    # The generator loss carries λ·L_G once the GAN is on (λ itself: test_discriminator.py).
    out = module.compute_losses(smooth_images(2), step=2)
    plain = out["rec_loss"] + out["vq_loss"]
    assert torch.allclose(out["loss"], plain + out["d_weight"] * out["g_loss"])
    assert float(module.compute_losses(smooth_images(2), step=1)["loss"]) == pytest.approx(
        float(plain), rel=1e-5
    )  # before disc_start: no GAN term (same images, same weights)

    path = tmp_path / "gan.ckpt"
    fit.save_checkpoint(path)
    assert len(torch.load(path, weights_only=True)["optimizer_states"]) == 2
    resumed = VQGANLitModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    trainer(6, limit_val_batches=0).fit(resumed, loader, ckpt_path=path)
    assert resumed.global_step == 6
    assert not same(list(resumed.discriminator.parameters()), list(module.discriminator.parameters()))


# --- validation logging -----------------------------------------------------------------------------


def test_validation_logs_ssim_and_a_reconstruction_grid_to_tensorboard(tmp_path, model, config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torchmetrics.functional.image import structural_similarity_index_measure

    module = VQGANLitModule(config.to_dict(), num_logged_images=3)
    module.vqgan.load_state_dict(model.state_dict())
    images = smooth_images(4)
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="tb", version="")
    validator = pl.Trainer(
        accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False, enable_model_summary=False
    )
    metrics = validator.validate(module, DataLoader(TensorDataset(images), batch_size=4), verbose=False)[0]
    with torch.no_grad():
        x_hat = model.decode_code(model.get_code(images)).clamp(0, 1)
    assert metrics["val/ssim"] == pytest.approx(
        float(structural_similarity_index_measure(x_hat, images, data_range=1.0)), abs=1e-5
    )
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "val/reconstructions" in events.Tags()["images"]
    image = events.Images("val/reconstructions")[-1]
    assert (image.height, image.width) == (2 + 2 * (32 + 2), 2 + 3 * (32 + 2))  # 2 rows × 3 columns
    grid = reconstruction_grid(images[:3], x_hat[:3])
    assert torch.equal(grid[:, 2:34, 2:34], images[0]) and torch.equal(grid[:, 36:68, 36:68], x_hat[1])


def test_options_are_checked_with_their_names(config):
    with pytest.raises(ValueError, match="codebook_init must be one of"):
        VQGANLitModule(config.to_dict(), codebook_init="random")
    with pytest.raises(ValueError, match=r"codebook_ema_decay must be in \[0, 1\)"):
        VQGANLitModule(config.to_dict(), codebook_ema_decay=1.0)
    with pytest.raises(ValueError, match="disc_loss must be one of"):
        VQGANLitModule(config.to_dict(), disc_loss="wgan")


def test_autoencoder_warmup_then_kmeans_codebook_from_pooled_latents(config):
    """Before quantize_start the decoder reads the latents (no VQ loss, no codes, codebook untouched);
    at quantize_start the codebook is set to k-means of that batch's latents and the
    kmeans_batches − 1 batches before it; from then on the model quantises."""
    torch.manual_seed(0)
    module = VQGANLitModule(
        config.to_dict(),
        learning_rate=1e-3,
        quantize_start=3,
        codebook_init="kmeans",
        kmeans_batches=2,
        dead_code_restart_every=2,
    )
    images = smooth_images(4)
    with torch.no_grad():
        warm = module.compute_losses(images, step=2)
        assert float(warm["vq_loss"]) == 0.0 and warm["codes"] is None
        assert torch.equal(warm["reconstructions"], module.vqgan.decode(module.vqgan.encode_latents(images)))
        quantised = module.compute_losses(images, step=3)
        assert torch.equal(quantised["reconstructions"], module.vqgan(images, return_loss=True)[0])

    initial_codebook = module.vqgan.quantize.embedding.weight.detach().clone()
    seen: dict[int, tuple] = {}
    original_init = module.kmeans_init_codebook

    def recording_init(latents: torch.Tensor) -> None:  # the real init, with its input recorded
        seen["kmeans_points"] = tuple(latents.shape)
        original_init(latents)

    module.kmeans_init_codebook = recording_init

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weight = pl_module.vqgan.quantize.embedding.weight
            seen[trainer.global_step] = (
                torch.equal(weight, initial_codebook),
                bool((pl_module.code_last_used >= 0).any()),
            )

    loader = DataLoader(TensorDataset(images), batch_size=2, shuffle=False)
    trainer(5, limit_val_batches=0, callbacks=[Watch()]).fit(module, loader)
    latent = config.latent_size
    assert seen["kmeans_points"] == (4, config.quantized_embed_dim, latent, latent)  # 2 batches of 2 images
    assert seen[1] == (True, False) and seen[3] == (True, False)  # warm-up steps 0-2: no codebook, no codes
    assert seen[4][0] is False and seen[4][1] is True  # step 3 set the codebook and used codes
    assert module._kmeans_pool == []


def test_learning_rate_follows_warmup_cosine(config):
    from lvm.training.optim import warmup_cosine_lr

    module = VQGANLitModule(config.to_dict(), learning_rate=1e-3, lr_warmup_steps=2, lr_decay_steps=5, end_lr=1e-4)
    rates: list[float] = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    loader = DataLoader(TensorDataset(smooth_images(4)), batch_size=2)
    trainer(7, limit_val_batches=0, callbacks=[Watch()]).fit(module, loader)
    assert rates == pytest.approx([warmup_cosine_lr(t, 1e-3, 1e-4, 2, 5) for t in range(7)])
    with pytest.raises(ValueError, match="lr_decay_steps"):
        VQGANLitModule(config.to_dict(), lr_warmup_steps=5, lr_decay_steps=2)
    with pytest.raises(ValueError, match="not supported with the discriminator"):
        VQGANLitModule(config.to_dict(), lr_decay_steps=5, disc_weight=0.5)


def test_codebook_is_initialised_once_under_gradient_accumulation(config):
    """The micro-batches of the step quantisation starts at share its number: only the first sets the codebook."""
    module = VQGANLitModule(config.to_dict(), quantize_start=1, codebook_init="kmeans", kmeans_batches=2)
    calls: list[tuple] = []
    original_init = module.kmeans_init_codebook

    def recording_init(latents: torch.Tensor) -> None:  # the real init, with its input recorded
        calls.append(tuple(latents.shape))
        original_init(latents)

    module.kmeans_init_codebook = recording_init
    loader = DataLoader(TensorDataset(smooth_images(8)), batch_size=2, shuffle=False)
    trainer(3, limit_val_batches=0, accumulate_grad_batches=2).fit(module, loader)
    latent = config.latent_size
    # step 0's two micro-batches are pooled, step 1's first adds its own: 3 batches of 2 images, once
    assert calls == [(6, config.quantized_embed_dim, latent, latent)]

"""VQGANLitModule: training lowers the reconstruction loss, validation metrics against formulas,
dead-code restart, checkpoints that load with weights_only=True."""

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lvm.tokenizer.lit_module import VQGANLitModule, codebook_statistics


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
        image[:, y:y + 8, x:x + 8] = torch.rand(3, 1, 1, generator=generator)
        images.append(image)
    return torch.stack(images)


def trainer(max_steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


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
    assert module.hparams["config"] == config.to_dict() and module.hparams["dead_code_restart_every"] == 7
    assert module.hparams["betas"] == (0.5, 0.9)
    fit = trainer(1, limit_val_batches=0)
    fit.fit(module, DataLoader(TensorDataset(smooth_images(2)), batch_size=2))
    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["hyper_parameters"]["learning_rate"] == 1e-3
    restored = VQGANLitModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    for key, value in module.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert restored.vqgan.config == config

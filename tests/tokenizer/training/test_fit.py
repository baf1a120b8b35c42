"""fit_tokenizer and reconstruction_psnr on a few tiny uint8 images."""

import math

import numpy as np
import pytest
import torch

from lvm.tokenizer.checkpoint import save_vqgan
from lvm.tokenizer.training.fit import fit_tokenizer, reconstruction_psnr
from lvm.tokenizer.vqgan import VQGANModel


def uint8_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[None, :, None]
    start, end = rng.uniform(0, 255, (n, 1, 1, 3)), rng.uniform(0, 255, (n, 1, 1, 3))
    return np.broadcast_to(start + (end - start) * ramp, (n, size, size, 3)).round().astype(np.uint8)


def test_reconstruction_psnr_is_the_uint8_round_trip_psnr(model):
    images = uint8_images(5)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        decoded = model.decode_code(model.get_code(x)).clamp(0, 1)
    reconstruction = (decoded.permute(0, 2, 3, 1).numpy() * 255).round()
    mse = np.mean((reconstruction - images.astype(np.float64)) ** 2)
    assert reconstruction_psnr(model, images, batch_size=2) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-3)


def test_fit_tokenizer_trains_logs_and_returns_an_eval_model(tmp_path, config):
    model, metrics = fit_tokenizer(
        uint8_images(8),
        uint8_images(4, seed=1),
        config.to_dict(),
        max_steps=3,
        batch_size=4,
        learning_rate=1e-3,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
    )
    assert isinstance(model, VQGANModel) and not model.training and model.config == config
    assert set(metrics) == {"psnr", "codebook_usage", "code_perplexity"}
    assert metrics["psnr"] == pytest.approx(reconstruction_psnr(model, uint8_images(4, seed=1)))
    assert 0 < metrics["codebook_usage"] <= 1 and 1 <= metrics["code_perplexity"] <= config.num_embeddings
    assert list(tmp_path.rglob("events.out.tfevents.*"))  # TensorBoard logs under default_root_dir


def test_fit_tokenizer_refuses_images_of_the_wrong_size(tmp_path, config):
    with pytest.raises(ValueError, match="resolution 32"):
        fit_tokenizer(uint8_images(4, size=64), uint8_images(2), config, max_steps=1, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        fit_tokenizer(
            uint8_images(4).astype(np.float32), uint8_images(2), config, max_steps=1, default_root_dir=tmp_path
        )


def test_fit_tokenizer_continues_from_a_saved_vqgan(tmp_path, config, model):
    """init_from loads every weight, codebook included; codebook_init="keep" leaves the codebook as it was
    loaded, so with a zero learning rate the run hands the same model back."""
    save_vqgan(model, tmp_path / "start")
    continued, _ = fit_tokenizer(
        uint8_images(8), uint8_images(4, seed=1), config, max_steps=2, batch_size=4, learning_rate=0.0,
        default_root_dir=tmp_path / "run", enable_progress_bar=False, logger=False, init_from=tmp_path / "start",
        codebook_init="keep", dead_code_restart_every=0,
    )  # fmt: skip
    for name, value in model.state_dict().items():
        assert torch.equal(continued.state_dict()[name], value), name
    images = uint8_images(4, seed=1)
    assert reconstruction_psnr(continued, images) == reconstruction_psnr(model, images)


def test_fit_tokenizer_refuses_a_start_of_another_architecture(tmp_path, config, model):
    start = save_vqgan(model, tmp_path / "start")
    other = config.to_dict() | {"num_embeddings": config.num_embeddings * 2}
    with pytest.raises(ValueError, match=r"init_from: .*start: its config.json differs .*num_embeddings"):
        fit_tokenizer(uint8_images(4), uint8_images(2), other, 1, default_root_dir=tmp_path, init_from=start)


def test_fit_tokenizer_refits_a_smaller_codebook_from_a_saved_vqgan(tmp_path, config, model):
    """With codebook_init="kmeans" a start with more codes is accepted: every other weight is loaded and the
    codebook becomes k-means centres of the latents, which quantise them better than the start's first rows."""
    start = save_vqgan(model, tmp_path / "start")
    smaller = config.to_dict() | {"num_embeddings": config.num_embeddings // 2}
    images = uint8_images(8)
    refitted, _ = fit_tokenizer(
        images, uint8_images(4, seed=1), smaller, max_steps=3, batch_size=4, learning_rate=0.0,
        default_root_dir=tmp_path / "run", enable_progress_bar=False, logger=False, init_from=start,
        codebook_init="kmeans", quantize_start=2, kmeans_batches=2, dead_code_restart_every=0,
    )  # fmt: skip
    assert refitted.config.num_embeddings == config.num_embeddings // 2
    for name, value in model.state_dict().items():
        if name != "quantize.embedding.weight":
            assert torch.equal(refitted.state_dict()[name], value), name
    with torch.no_grad():
        latents = refitted.encode_latents(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    codebook = refitted.quantize.embedding.weight.detach()
    first_rows = model.quantize.embedding.weight.detach()[: codebook.shape[0]]
    assert torch.cdist(flat, codebook).min(1).values.mean() < torch.cdist(flat, first_rows).min(1).values.mean()
    # k-means centres lie inside the latents' bounding box; open-muse's uniform(±1/K) start rows need not.
    assert bool(((codebook >= flat.min(0).values - 1e-5) & (codebook <= flat.max(0).values + 1e-5)).all())


def test_fit_tokenizer_in_bf16_mixed_precision_learns_as_the_fp32_run(tmp_path, config, model):
    """precision="bf16-mixed" runs the same training in bfloat16 autocast: from the same start it lowers the
    reconstruction error about as much as the fp32 run, and the model comes back in fp32. The k-means codebook
    init and the dead-code restarts, which read bf16 latents, write fp32 rows."""
    start = save_vqgan(model, tmp_path / "start")
    train, val = uint8_images(8), uint8_images(4, seed=1)
    runs = {
        precision: fit_tokenizer(
            train, val, config, max_steps=12, batch_size=4, learning_rate=3e-3, default_root_dir=tmp_path / precision,
            enable_progress_bar=False, logger=False, init_from=start, codebook_init="kmeans", quantize_start=4,
            kmeans_batches=2, dead_code_restart_every=2, precision=precision,
        )
        for precision in ("32-true", "bf16-mixed")
    }  # fmt: skip
    (_, fp32_metrics), (bf16, bf16_metrics) = runs["32-true"], runs["bf16-mixed"]
    assert all(v.dtype == torch.float32 for v in bf16.state_dict().values())
    gain = fp32_metrics["psnr"] - reconstruction_psnr(model, val)  # 4.6 dB when written
    assert gain > 2 and abs(bf16_metrics["psnr"] - fp32_metrics["psnr"]) < 0.25 * gain

"""`python -m lvm.train_tokenizer` through Hydra's compose API on a folder of small PNGs: the loss
falls, the saved folder loads, last.ckpt resumes, unreadable images are counted or refused."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue
from PIL import Image

from lvm.media.images import ImageReadError, load_image
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.training.image_data import (
    ImageFileDataset,
    ImageFolderDataModule,
    check_image_headers,
    list_image_files,
)
from lvm.train_tokenizer import train_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"
# The 32 px VQGAN of tests/tokenizer/conftest.py (f = 4, 64 codes): seconds per run on 2 cores.
TINY_VQGAN = [
    "tokenizer.resolution=32",
    "tokenizer.channel_mult=[1,1,2]",
    "tokenizer.num_res_blocks=1",
    "tokenizer.attn_resolutions=[16]",
    "tokenizer.z_channels=32",
    "tokenizer.num_embeddings=64",
    "tokenizer.quantized_embed_dim=8",
]


def write_shape_images(folder: Path, n: int, size: int = 40, seed: int = 0) -> None:
    """Smooth colour gradients with a disc and a square, as PNGs in two sub-folders (the search is
    recursive) and at a size other than the VQGAN's (they are resized on reading)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        image = start + (end - start) * x[..., None]
        cy, cx = rng.uniform(0.25, 0.75, 2)
        image[(y - cy) ** 2 + (x - cx) ** 2 < 0.04] = rng.uniform(0, 255, 3)
        top, left = rng.integers(0, size - 10, 2)
        image[top : top + 10, left : left + 10] = rng.uniform(0, 255, 3)
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.round().astype(np.uint8)).save(sub / f"img_{i:03d}.png")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    write_shape_images(folder, 24)
    (folder / "a" / "corrupt.png").write_bytes(b"definitely not a png")
    return folder


def compose_tokenizer(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train_tokenizer", overrides=list(overrides))


def tiny_run(output_dir: Path, images: Path, *overrides: str):
    return compose_tokenizer(
        "experiment=tokenizer_tiny",
        f"paths.output_dir={output_dir}",
        f"data.source={images}",
        *TINY_VQGAN,
        "data.val_fraction=0.25",
        "data.num_workers=1",
        "trainer.max_steps=30",
        "trainer.val_check_interval=15",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.every_n_train_steps=10",
        "module.options.dead_code_restart_every=10",
        "module.options.num_logged_images=4",
        *overrides,
    )


def logged(output_dir: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) of a metric in the CSV logger's file."""
    with open(output_dir / "csv" / "metrics.csv") as f:
        return [(int(row["step"]), float(row[name])) for row in csv.DictReader(f) if row.get(name)]


def test_training_lowers_the_loss_saves_a_loadable_tokenizer_and_resumes(tmp_path, image_folder, capsys):
    metrics = train_tokenizer(tiny_run(tmp_path, image_folder))
    rec = [value for _, value in logged(tmp_path, "train/rec_loss")]
    assert len(rec) == 30
    assert np.mean(rec[-5:]) < 0.6 * np.mean(rec[:3])
    assert {"val/psnr", "val/ssim", "val/codebook_usage", "val/code_perplexity"} <= set(metrics)
    out = capsys.readouterr().out
    assert "skipped 1 of 25 files" in out and "corrupt.png" in out  # counted, reported by name, skipped
    assert "after 30 steps" in out and "val/psnr" in out

    vqgan = load_vqgan(tmp_path / "tokenizer")
    assert vqgan.config.resolution == 32 and vqgan.config.num_embeddings == 64
    checkpoints = tmp_path / "checkpoints"
    assert {p.name for p in checkpoints.glob("*.ckpt")} >= {"last.ckpt", "step0000010.ckpt", "step0000030.ckpt"}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))

    train_tokenizer(tiny_run(tmp_path, image_folder, "ckpt_path=last", "trainer.max_steps=36"))
    last = torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 36  # continued from step 30, not restarted from 0
    assert "after 36 steps" in capsys.readouterr().out


def test_strict_makes_an_unreadable_image_an_error_naming_it(tmp_path, image_folder):
    with pytest.raises(BadInputError, match=r"corrupt\.png: not a readable image"):
        train_tokenizer(tiny_run(tmp_path, image_folder, "data.strict=true"))


def test_image_list_file_and_split(tmp_path, image_folder):
    files = list_image_files(image_folder)
    assert len(files) == 25 and all(p.suffix == ".png" for p in files)
    listing = tmp_path / "list.txt"
    listing.write_text("# images\n" + "\n".join(str(p) for p in files[:10]) + "\n\nmissing.png\n")
    datamodule = ImageFolderDataModule(listing, resolution=32, val_fraction=0.2, batch_size=4, num_workers=0)
    datamodule.setup("fit")
    assert files[0].name == "corrupt.png"  # a/ sorts before b/, and "corrupt" before "img_*"
    assert [Path(p).name for p in datamodule.skips.skipped_paths] == ["corrupt.png", "missing.png"]
    assert len(datamodule.train_files) == 7 and len(datamodule.val_files) == 2  # 9 readable, 20 % held out
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.shape == (4, 3, 32, 32) and 0 <= float(batch.min()) and float(batch.max()) <= 1


@pytest.mark.parametrize("experiment", ["tokenizer_tiny", "tokenizer_lvm"])
def test_tokenizer_experiments_compose(tmp_path, experiment):
    cfg = compose_tokenizer(f"experiment={experiment}", f"paths.output_dir={tmp_path}", "data.source=x")
    assert cfg.data.resolution == cfg.tokenizer.resolution
    if experiment == "tokenizer_lvm":
        assert cfg.tokenizer.num_embeddings == 8192 and cfg.trainer.precision == "bf16-mixed"
        assert (
            list(cfg.module.options.betas) == [0.5, 0.9]
            and cfg.module.options.disc_weight > 0
            and cfg.module.options.disc_start > 0
        )
        assert cfg.module.options.perceptual_weight == 1.0 and OmegaConf.is_missing(cfg, "vgg16_weights")
        with pytest.raises(MissingMandatoryValue, match="lpips_vgg_path"):
            instantiate(cfg.module)  # the VGG16 path must be filled in before training
        filled = compose_tokenizer(f"experiment={experiment}", "data.source=x", "vgg16_weights=/w/vgg16.pth")
        assert filled.module.options.lpips_vgg_path == "/w/vgg16.pth"
    else:
        assert cfg.tokenizer.num_embeddings == 256 and cfg.trainer.accelerator == "cpu"
        assert list(cfg.module.options.betas) == [0.9, 0.99] and cfg.module.options.disc_weight == 0
        assert cfg.module.options.dead_code_restart_every > 0
    assert cfg.trainer.gradient_clip_val is None


def test_a_truncated_image_is_skipped_when_loaded_or_refused_when_strict(tmp_path, image_folder):
    good = sorted((image_folder / "b").glob("*.png"))[:2]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:200])  # the header reads, the pixels do not
    assert check_image_headers([truncated, *good], SkipCounter()) == [truncated, *good]
    dataset = ImageFileDataset([truncated, *good], resolution=32)
    with pytest.warns(SkippedInputWarning, match=r"truncated\.png"):
        image = dataset[0]
    assert torch.equal(image, load_image(good[0], size=32))  # its neighbour takes its place
    with pytest.raises(ImageReadError, match=r"truncated\.png"):
        ImageFileDataset([truncated, *good], resolution=32, strict=True)[0]

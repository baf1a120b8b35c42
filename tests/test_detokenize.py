"""`python -m lvm.detokenize`: real images encoded by a tiny VQGAN and stored as sentences come back as
one PNG grid per sentence whose tiles are exactly `lvm.tokenizer.decode` of the stored codes; wrong
keys, special-token ids and mismatched image sizes are errors naming them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from lvm.data.shards import ShardWriter, VisualSentence
from lvm.detokenize import detokenize, select_sentences
from lvm.media.images import array_to_tensor
from lvm.tokenizer import VQGANConfig, VQGANModel, decode, encode, load_vqgan, save_vqgan, tensor_to_uint8
from lvm.tokenizer.grid import tile_box

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # px; f = 4 → 8×8 = 64 tokens per image
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
N_IMAGES = (3, 5, 10)  # sentences 0-2; 10 images wrap onto a second row of the default 8 columns


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A saved tiny VQGAN and shards: sentences 0-2 of real photos, 3 holding a special-token id;
    a second shard set whose images are 16 tokens each."""
    root = tmp_path_factory.mktemp("detokenize")
    config = VQGANConfig(
        resolution=SIZE,
        hidden_channels=32,
        channel_mult=(1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(16,),
        z_channels=32,
        num_embeddings=64,
        quantized_embed_dim=8,
    )
    torch.manual_seed(0)
    model = VQGANModel(config).eval()
    with torch.no_grad():  # spread the codebook so the photos use many codes
        model.quantize.embedding.weight.normal_(0.0, 0.5)
    save_vqgan(model, root / "vqgan")
    model = load_vqgan(root / "vqgan")

    photos = torch.stack([array_to_tensor(getattr(skimage.data, name)(), size=SIZE) for name in PHOTOS])
    codes = encode(model, photos)
    assert len(codes.unique()) > 8
    sentences = [codes[torch.arange(n) % len(PHOTOS)] for n in N_IMAGES]
    special = codes[:2].clone()
    special[1, 5] = 8192  # the first reserved id (the original's EasyLM/models/llama/llama_model.py): not an image code
    with ShardWriter(root / "shards", max_samples_per_shard=2, tokens_per_image=64) as writer:
        for sentence in [*sentences, special]:
            writer.write(
                VisualSentence(
                    tokens=sentence.flatten().numpy().astype(np.uint16),
                    kind="paired",
                    source=list(PHOTOS[: len(sentence)]),
                    n_images=len(sentence),
                )
            )
    with ShardWriter(root / "small", tokens_per_image=16) as writer:
        writer.write(VisualSentence(tokens=np.arange(32, dtype=np.uint16), kind="video", source=["x"], n_images=2))
    return {"root": root, "model": model, "sentences": sentences}


def expected_tiles(model: VQGANModel, codes: torch.Tensor) -> np.ndarray:
    return tensor_to_uint8(decode(model, codes))  # (N, H, W, 3) uint8


def assert_grid(png: Path, model: VQGANModel, codes: torch.Tensor, columns: int) -> None:
    grid = np.asarray(Image.open(png).convert("RGB"))
    n = len(codes)
    rows = -(-n // columns)
    assert grid.shape == (rows * (SIZE + 2) + 2, min(columns, n) * (SIZE + 2) + 2, 3)
    for i, tile in enumerate(expected_tiles(model, codes)):
        top, left, bottom, right = tile_box(i, n, (SIZE, SIZE), columns=columns)
        np.testing.assert_array_equal(grid[top:bottom, left:right], tile, err_msg=f"{png} image {i}")
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()  # the white border


def compose_detokenize(world: dict, out_dir: Path, *overrides: str):
    root = world["root"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "detokenize",
            overrides=[
                f"shards={root / 'shards'}",
                f"tokenizer_path={root / 'vqgan'}",
                f"out_dir={out_dir}",
                *overrides,
            ],
        )


def test_cli_writes_one_grid_per_sentence(world, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LVM_ROOT": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lvm.detokenize",
            f"shards={world['root'] / 'shards' / 'manifest.json'}",
            f"tokenizer_path={world['root'] / 'vqgan'}",
            f"out_dir={out}",
            "count=3",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = ["shard-000000_000000000.png", "shard-000000_000000001.png", "shard-000001_000000002.png"]
    assert sorted(p.name for p in out.iterdir()) == names  # and no *.tmp left behind
    for name in names:
        assert str(out / name) in result.stdout
    for name, codes in zip(names, world["sentences"]):
        assert_grid(out / name, world["model"], codes, columns=min(len(codes), 8))


def test_keys_and_columns_choose_sentences_and_layout(world, tmp_path):
    cfg = compose_detokenize(world, tmp_path, "keys=[000000002,000000001]", "columns=2")
    written = detokenize(cfg)
    assert [p.name for p in written] == ["shard-000000_000000001.png", "shard-000001_000000002.png"]  # stored order
    assert_grid(written[0], world["model"], world["sentences"][1], columns=2)  # 5 images: 3 rows of 2
    assert_grid(written[1], world["model"], world["sentences"][2], columns=2)


def test_index_counts_across_shards_and_globs_work(world):
    chosen = select_sentences(str(world["root"] / "shards" / "shard-*.tar"), index=1, count=2)
    assert [(Path(p).name, s.key, s.n_images) for p, s in chosen] == [
        ("shard-000000.tar", "000000001", 5),
        ("shard-000001.tar", "000000002", 10),
    ]
    with pytest.raises(ValueError, match=r"index 9 is past the end \(4 samples"):
        select_sentences(world["root"] / "shards", index=9)


def test_missing_key_is_an_error_naming_it(world, tmp_path):
    cfg = compose_detokenize(world, tmp_path, "keys=[000000001,no_such_key]")
    with pytest.raises(ValueError, match=r"no sample with key 'no_such_key'"):
        detokenize(cfg)
    assert not list(tmp_path.glob("*.png"))


def test_special_token_id_is_an_error_naming_shard_key_and_id(world, tmp_path):
    cfg = compose_detokenize(world, tmp_path, "index=2", "count=2")  # sentence 2 is fine, 3 is not
    shard = world["root"] / "shards" / "shard-000001.tar"
    with pytest.raises(ValueError, match=rf"{shard}: sample 000000003: .*id 8192 ≥ num_embeddings 64"):
        detokenize(cfg)
    assert not list(tmp_path.glob("*.png"))  # every sentence is checked before any file is written


def test_images_of_another_size_are_an_error_naming_both_sizes(world, tmp_path):
    cfg = compose_detokenize(world, tmp_path, f"shards={world['root'] / 'small'}")
    shard = world["root"] / "small" / "shard-000000.tar"
    with pytest.raises(ValueError, match=rf"{shard}: sample 000000000: .* 16 tokens per image .* 64 tokens per image"):
        detokenize(cfg)

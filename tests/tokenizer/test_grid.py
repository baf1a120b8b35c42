"""Sentence pictures: make_grid's layout, checks of a sentence's codes, atomic PNG writes."""

import numpy as np
import pytest
import torch
from PIL import Image

import lvm.tokenizer.grid as grid_module
from lvm.tokenizer import decode, tensor_to_uint8
from lvm.tokenizer.grid import image_grid, save_png, sentence_codes, sentence_grid, tile_box


@pytest.mark.parametrize(
    "n, columns, shape",
    [
        (3, None, (2 + 34, 2 + 3 * 34)),  # one row by default
        (10, None, (2 + 2 * 34, 2 + 8 * 34)),  # wrapped after 8
        (5, 2, (2 + 3 * 34, 2 + 2 * 34)),
        (2, 4, (2 + 34, 2 + 2 * 34)),  # no empty columns, as make_grid
    ],
)
def test_grid_layout(n, columns, shape):
    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
    picture = image_grid(images, columns=columns)
    assert picture.shape == (*shape, 3) and picture.dtype == np.uint8
    tiles = tensor_to_uint8(images)
    covered = np.zeros(picture.shape[:2], bool)
    for i in range(n):
        top, left, bottom, right = tile_box(i, n, (32, 32), columns=columns)
        np.testing.assert_array_equal(picture[top:bottom, left:right], tiles[i])
        covered[top:bottom, left:right] = True
    assert (picture[~covered] == 255).all()  # everything else is the white padding


def test_sentence_codes_checks_size_and_ids(config):
    tokens = np.arange(2 * config.tokens_per_image, dtype=np.uint16) % config.num_embeddings
    codes = sentence_codes(tokens, 2, config, where="s.tar: sample 7")
    assert codes.dtype == torch.long and codes.shape == (2, config.tokens_per_image)
    assert torch.equal(codes.flatten(), torch.from_numpy(tokens.astype(np.int64)))
    with pytest.raises(ValueError, match=r"s\.tar: sample 7: .* 32 tokens per image .* 64 tokens per image"):
        sentence_codes(tokens, 4, config, where="s.tar: sample 7")
    tokens[70] = 8195
    with pytest.raises(ValueError, match=r"s\.tar: sample 7: token 70 \(image 1\) is id 8195 ≥ num_embeddings 64"):
        sentence_codes(tokens, 2, config, where="s.tar: sample 7")


def test_sentence_grid_tiles_are_the_decoded_codes(model, config):
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, config.num_embeddings, (3, config.tokens_per_image), generator=generator)
    picture = sentence_grid(model, codes.flatten().numpy().astype(np.uint16), 3, where="x", padding=0)
    expected = tensor_to_uint8(decode(model, codes))
    np.testing.assert_array_equal(picture, np.concatenate(list(expected), axis=1))


def test_save_png_is_atomic(tmp_path, monkeypatch):
    picture = np.zeros((4, 6, 3), np.uint8)
    picture[1, 2] = (255, 0, 7)
    path = save_png(picture, tmp_path / "sub" / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), picture)
    before = path.read_bytes()

    def crash(self, fp, format=None, **params):
        open(fp, "wb").write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(grid_module.Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_png(picture * 0 + 9, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["a.png"]

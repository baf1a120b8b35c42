"""File → [0, 1] tensor as the original prepares VQGAN input (the original's DATASET.md and tokenize_examples/): PIL,
RGB, resize without
keeping the aspect ratio with PIL's default filter (bicubic), /255; pinned on skimage's astronaut."""

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from lvm.media.images import ImageReadError, array_to_tensor
from lvm.tokenizer import load_image, tensor_to_uint8

PIXELS = [(0, 0), (10, 37), (31, 5), (63, 63), (40, 22)]


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def test_astronaut_is_resized_to_unit_range_float_chw(astronaut_png):
    image = load_image(astronaut_png, size=64)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.max()) > 0.9 and float(image.min()) < 0.1  # [0, 1], not [-1, 1] nor [0, 255]
    # Independently: PIL bicubic resize of the 512×512 array, /255, at a few pixels.
    reference = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((64, 64), Image.Resampling.BICUBIC))
    for y, x in PIXELS:
        assert image[:, y, x].tolist() == pytest.approx((reference[y, x] / 255.0).tolist(), abs=1e-7), (y, x)
    # Not a filter that differs from the original's default.
    nearest = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((64, 64), Image.Resampling.NEAREST))
    assert not np.array_equal(tensor_to_uint8(image), nearest)


def test_aspect_ratio_is_not_kept(tmp_path):
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, :30] = 255  # left half white
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", size=32)
    assert image.shape == (3, 32, 32)
    assert float(image[:, :, :14].min()) == 1.0 and float(image[:, :, 18:].max()) == 0.0


def test_center_crop_keeps_the_central_fraction(astronaut_png):
    image = load_image(astronaut_png, size=32, center_crop=0.5)
    reference = Image.fromarray(skimage.data.astronaut()).crop((128, 128, 384, 384)).resize((32, 32))
    assert np.array_equal(tensor_to_uint8(image), np.asarray(reference))


def test_gray_and_rgba_files_become_rgb(tmp_path):
    gray = skimage.data.camera()[:64, :64]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    image = load_image(tmp_path / "gray.png", size=None)
    assert image.shape == (3, 64, 64)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert np.array_equal(tensor_to_uint8(image)[..., 0], gray)
    rgba = np.dstack([skimage.data.astronaut()[:32, :32], np.full((32, 32), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(tensor_to_uint8(load_image(tmp_path / "rgba.png", size=None)), rgba[..., :3])


def test_uint8_round_trip_and_array_path_match_files(astronaut_png):
    astronaut = skimage.data.astronaut()
    assert np.array_equal(tensor_to_uint8(load_image(astronaut_png, size=None)), astronaut)
    assert torch.equal(array_to_tensor(astronaut, size=64), load_image(astronaut_png, size=64))
    batch = torch.stack([load_image(astronaut_png, size=16)] * 2)
    assert tensor_to_uint8(batch).shape == (2, 16, 16, 3)
    # Out-of-range values are clamped, and rounding (not truncation) maps to uint8.
    assert tensor_to_uint8(torch.tensor([-0.5, 0.999, 1.5]).reshape(3, 1, 1)).flatten().tolist() == [0, 255, 255]


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(bad)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")

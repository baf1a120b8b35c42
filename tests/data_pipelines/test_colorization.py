"""Colorization sentences: (gray, colour) pairs, gray = 0.2989 R + 0.5870 G + 0.1140 B."""

import numpy as np
import pytest

from data_pipelines.colorization import colorization_sentences, to_grayscale_rgb
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, write_png, write_truncated_png


def test_grayscale_matches_the_formula(photo):
    gray = to_grayscale_rgb(photo)
    r, g, b = (photo[..., c].astype(np.float64) for c in range(3))
    expected = np.rint(0.2989 * r + 0.5870 * g + 0.1140 * b).astype(np.uint8)
    assert gray.shape == photo.shape and gray.dtype == np.uint8
    assert all(np.array_equal(gray[..., c], expected) for c in range(3))
    as_float = to_grayscale_rgb(photo.astype(np.float32) / 255)
    assert as_float.dtype == np.float32
    np.testing.assert_allclose(as_float[..., 0], (0.2989 * r + 0.5870 * g + 0.1140 * b) / 255, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        to_grayscale_rgb(photo[..., 0])


@pytest.fixture
def paths(tmp_path, marked_image):
    return [str(write_png(tmp_path / f"c{i}.png", marked_image(i))) for i in range(7)]


def test_sentences_are_gray_colour_pairs(paths, marked_image):
    sentences = list(colorization_sentences(paths, SIZE, n_shots=3, n_epochs=2))
    assert len(sentences) == 2 * 2
    for sentence in sentences:
        assert sentence.kind == "colorization" and len(sentence) == 6
        assert sentence.source[0::2] == sentence.source[1::2]
        for gray, colour, marker in zip(sentence.images[0::2], sentence.images[1::2], markers(sentence.images[1::2])):
            assert np.array_equal(colour, marked_image(marker))  # the file itself, untouched
            assert np.array_equal(gray, to_grayscale_rgb(colour))
        assert len(set(markers(sentence.images[1::2]))) == 3


def test_corrupt_image_is_skipped_or_raised(tmp_path, paths, marked_image):
    bad = str(write_truncated_png(tmp_path / "c3.png", marked_image(3)))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning, match="c3.png"):
        sentences = list(colorization_sentences(paths, SIZE, n_shots=2, n_epochs=2, skips=skips))
    assert len(sentences) == 2 * 3 and all(bad not in s.source for s in sentences)
    assert skips.skipped_paths == [bad] and skips.files_seen == 7
    with pytest.raises(BadInputError, match="c3.png"):
        list(colorization_sentences(paths, SIZE, n_shots=7, strict=True))


def test_deterministic_given_seed(paths):
    def sources(seed):
        return [s.source for s in colorization_sentences(paths, SIZE, n_shots=2, n_epochs=2, rng_seed=seed)]

    assert sources(3) == sources(3) and sources(3) != sources(4)
    with pytest.raises(ValueError, match="n_shots"):
        list(colorization_sentences(paths, SIZE, n_shots=8))

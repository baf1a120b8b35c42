"""Inpainting sentences: (masked, original) pairs; a black square or randomly dropped patches."""

import random

import numpy as np
import pytest

from data_pipelines.inpainting import draw_mask, inpainting_sentences, mask_from_description
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, write_png, write_truncated_png

PATCH = 8  # 4×4 patches on the 32-pixel test images


@pytest.fixture
def root(tmp_path, marked_image):
    # A tree, not a flat folder: images in nested class folders are found too.
    for i in range(7):
        write_png(tmp_path / "images" / f"class{i % 2}" / f"im{i}.png", marked_image(i))
    return tmp_path / "images"


def expected_hidden(description):
    """The mask written out from the original's, independently of `mask_from_description`."""
    hidden = np.zeros((SIZE, SIZE), dtype=bool)
    if description["mode"] == "hole":
        t, left, s = description["top"], description["left"], description["side"]
        for y in range(t, t + s):
            for x in range(left, left + s):
                hidden[y, x] = True
        return hidden
    per_row = SIZE // PATCH
    for index in range(per_row * per_row):
        if index not in description["kept"]:
            y, x = divmod(index, per_row)
            hidden[y * PATCH : (y + 1) * PATCH, x * PATCH : (x + 1) * PATCH] = True
    return hidden


def test_pairs_are_masked_then_original(root, marked_image):
    skips = SkipCounter()
    sentences = list(inpainting_sentences(root, SIZE, n_shots=3, patch_size=PATCH, n_epochs=2, skips=skips))
    assert len(sentences) == 2 * 2 and skips.files_seen == 7 and skips.n_skipped == 0
    for sentence in sentences:
        assert sentence.kind == "inpainting" and len(sentence) == 6
        assert sentence.source[0::2] == sentence.source[1::2]
        originals = sentence.images[1::2]
        assert len(set(markers(originals))) == 3
        for masked, original, description in zip(sentence.images[0::2], originals, sentence.meta["masks"]):
            assert np.array_equal(original, marked_image(markers([original])[0]))  # the file, untouched
            hidden = expected_hidden(description)
            assert np.array_equal(mask_from_description(SIZE, SIZE, description), hidden)
            assert np.array_equal(masked[~hidden], original[~hidden])  # untouched where not masked
            assert not masked[hidden].any()  # black where masked


def test_hole_is_a_square_inside_the_image():
    rng = random.Random(0)
    sides = []
    for _ in range(300):
        hidden, description = draw_mask(SIZE, SIZE, PATCH, 1.0, rng)
        side = description["side"]
        rows, cols = np.nonzero(hidden)
        assert hidden.sum() == side * side and np.ptp(rows) + 1 == side and np.ptp(cols) + 1 == side
        sides.append(side)
    assert min(sides) == int(0.1 * SIZE) and max(sides) == int(0.5 * SIZE) - 1  # side in [0.1, 0.5)·32


def test_mask_modes_occur_at_the_ratio():
    rng = random.Random(1)
    draws = [draw_mask(SIZE, SIZE, PATCH, 0.3, rng)[1] for _ in range(2000)]
    holes = sum(d["mode"] == "hole" for d in draws)
    assert abs(holes / len(draws) - 0.3) < 0.04  # ±4σ of a binomial(2000, 0.3)
    # r ~ U[0, 1) per image: the kept fraction of the 16 patches averages ½ and spans (nearly) 0 to 1.
    kept = [len(d["kept"]) / 16 for d in draws if d["mode"] == "patches"]
    assert abs(np.mean(kept) - 0.5) < 0.04 and min(kept) == 0 and max(kept) == 1
    # The patch grid covers images whose size is not a multiple of the patch: edge patches are smaller.
    hidden, description = draw_mask(20, 20, PATCH, 0.0, random.Random(2))
    assert np.array_equal(hidden, mask_from_description(20, 20, description))
    assert all(0 <= i < 9 for i in description["kept"])


def test_corrupt_image_is_skipped_or_raised(root, marked_image):
    bad = str(write_truncated_png(root / "class1" / "im3.png", marked_image(3)))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning, match="im3.png"):
        sentences = list(inpainting_sentences(root, SIZE, n_shots=2, patch_size=PATCH, n_epochs=2, skips=skips))
    assert len(sentences) == 2 * 3 and all(bad not in s.source for s in sentences)
    assert skips.skipped_paths == [bad] and skips.files_seen == 7
    with pytest.raises(BadInputError, match="im3.png"):
        list(inpainting_sentences(root, SIZE, n_shots=7, strict=True))


def test_deterministic_given_seed(root):
    def draw(seed):
        return [
            (s.source, s.meta["masks"])
            for s in inpainting_sentences(root, SIZE, n_shots=2, patch_size=PATCH, n_epochs=2, rng_seed=seed)
        ]

    assert draw(3) == draw(3) and draw(3) != draw(4)


def test_refuses_nonsense_arguments(root):
    with pytest.raises(ValueError, match="n_shots"):
        list(inpainting_sentences(root, SIZE, n_shots=8))
    with pytest.raises(ValueError, match="hole_mask_ratio"):
        list(inpainting_sentences(root, SIZE, n_shots=2, hole_mask_ratio=1.5))
    with pytest.raises(ValueError, match="patch_size"):
        list(inpainting_sentences(root, SIZE, n_shots=2, patch_size=0))

"""Paired-annotation sentences: x1 y1 x2 y2 … with x and y matched by file stem."""

import os

import numpy as np
import pytest

from data_pipelines.paired import match_pairs, paired_sentences
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, stems_dir, write_png, write_truncated_png

N_PAIRS = 9


def annotation(marked_image):
    """y of stem s: the photo inverted (a different-looking "annotation") carrying marker s + 12."""

    def make(stem):
        image = 255 - marked_image(stem)
        image[:16, :16] = marked_image(stem + 12)[:16, :16]
        return image

    return make


@pytest.fixture
def folders(tmp_path, marked_image):
    # Outputs are written in reverse order into another folder: only the stem ties y to x.
    x_dir = stems_dir(tmp_path / "x", range(N_PAIRS), marked_image)
    y_dir = stems_dir(tmp_path / "y", reversed(range(N_PAIRS)), annotation(marked_image))
    return str(x_dir), str(y_dir)


def check_layout(sentence, n_shots):
    assert sentence.kind == "paired" and len(sentence) == 2 * n_shots
    x_marks, y_marks = markers(sentence.images[0::2]), markers(sentence.images[1::2])
    assert [y - 12 for y in y_marks] == x_marks  # every y belongs to the x before it
    for x_path, y_path in zip(sentence.source[0::2], sentence.source[1::2]):
        assert os.path.basename(x_path) == os.path.basename(y_path)
    assert sentence.meta["stems"] == [f"item_{m:02d}" for m in x_marks]
    return x_marks


def test_match_pairs_by_stem_records_unmatched(tmp_path, folders, marked_image):
    x_dir, y_dir = folders
    write_png(tmp_path / "x" / "item_20.png", marked_image(20))  # no y
    write_png(tmp_path / "y" / "sub" / "item_01.png", marked_image(1))  # nested: stem "sub/item_01"
    skips = SkipCounter(warn=False)
    pairs = match_pairs(x_dir, y_dir, skips)
    assert [stem for stem, _, _ in pairs] == [f"item_{s:02d}" for s in range(N_PAIRS)]
    assert all(os.path.dirname(x) == x_dir and os.path.dirname(y) == y_dir for _, x, y in pairs)
    assert sorted(os.path.basename(p) for p in skips.skipped_paths) == ["item_01.png", "item_20.png"]
    with pytest.raises(BadInputError, match="item_20.png"):
        match_pairs(x_dir, y_dir, SkipCounter(), strict=True)


def test_ambiguous_stem_is_left_out(tmp_path, folders, marked_image):
    x_dir, y_dir = folders
    write_png(tmp_path / "x" / "item_03.jpg", marked_image(3))
    skips = SkipCounter(warn=False)
    stems = [stem for stem, _, _ in match_pairs(x_dir, y_dir, skips)]
    assert "item_03" not in stems and len(stems) == N_PAIRS - 1
    assert any("ambiguous" in reason for _, reason in skips.skipped)


def test_sentences_interleave_matched_pairs(folders):
    skips = SkipCounter()
    sentences = list(paired_sentences(*folders, SIZE, n_shots=4, n_epochs=2, skips=skips))
    assert len(sentences) == 2 * (N_PAIRS // 4)
    for epoch in range(2):
        seen = [m for s in sentences if s.meta["epoch"] == epoch for m in check_layout(s, 4)]
        assert len(seen) == len(set(seen)) == 8  # each pair at most once per epoch
    assert skips.n_skipped == 0 and skips.files_seen == 2 * N_PAIRS


def test_unreadable_side_skips_the_pair(tmp_path, folders, marked_image):
    bad = str(write_truncated_png(tmp_path / "y" / "item_05.png", marked_image(5)))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning, match="item_05.png"):
        sentences = list(paired_sentences(*folders, SIZE, n_shots=2, n_epochs=3, skips=skips))
    marks = [m for s in sentences for m in check_layout(s, 2)]
    assert 5 not in marks and len(sentences) == 3 * 4
    assert bad in skips.skipped_paths and str(tmp_path / "x" / "item_05.png") in skips.skipped_paths
    assert skips.n_skipped == 2  # the bad file and its partner, recorded once across epochs
    with pytest.raises(BadInputError, match="item_05.png"):
        list(paired_sentences(*folders, SIZE, n_shots=N_PAIRS, strict=True))


def test_deterministic_given_seed(folders):
    def stems(seed):
        return [s.meta["stems"] for s in paired_sentences(*folders, SIZE, n_shots=3, n_epochs=2, rng_seed=seed)]

    first = list(paired_sentences(*folders, SIZE, n_shots=3, rng_seed=0))
    again = list(paired_sentences(*folders, SIZE, n_shots=3, rng_seed=0))
    assert all(np.array_equal(a, b) for s, t in zip(first, again) for a, b in zip(s.images, t.images))
    assert stems(0) == stems(0) and stems(0) != stems(1)


def test_too_few_pairs_is_refused(folders):
    with pytest.raises(ValueError, match="matched pairs"):
        list(paired_sentences(*folders, SIZE, n_shots=N_PAIRS + 1))

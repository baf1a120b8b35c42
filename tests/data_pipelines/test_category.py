"""Category sentences: n_shots × images_per_shot images, all of one class (ImageNet layout)."""

import os

import pytest

from data_pipelines.category import category_sentences
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, write_png, write_truncated_png

# Class → the markers of its images: a marker names both the image and its class.
CLASSES = {"n01": range(0, 9), "n02": range(10, 15), "n03": range(20, 22)}


def class_of(marker):
    return next(name for name, marks in CLASSES.items() if marker in marks)


@pytest.fixture
def root(tmp_path, marked_image):
    for name, marks in CLASSES.items():
        for m in marks:
            write_png(tmp_path / "train" / name / f"{name}_{m}.png", marked_image(m))
    return tmp_path / "train"


def test_each_sentence_is_one_class(root):
    skips = SkipCounter(warn=False)
    sentences = list(category_sentences(root, SIZE, images_per_shot=2, n_shots=2, n_epochs=3, skips=skips))
    # n01 holds 9 images → 2 sentences of 4, n02 holds 5 → 1, n03 holds 2 → none (recorded).
    assert len(sentences) == 3 * 3
    for sentence in sentences:
        marks = markers(sentence.images)
        assert sentence.kind == "category" and len(sentence) == 4 and len(set(marks)) == 4
        assert {class_of(m) for m in marks} == {sentence.meta["class"]}
        assert all(os.path.basename(os.path.dirname(p)) == sentence.meta["class"] for p in sentence.source)
    for epoch in range(3):
        n01 = [m for s in sentences if s.meta["epoch"] == epoch and s.meta["class"] == "n01" for m in markers(s.images)]
        assert len(n01) == len(set(n01)) == 8  # each image at most once per epoch
    assert skips.skipped_paths == [str(root / "n03")] and "2 images, needs 4" in skips.skipped[0][1]
    assert skips.files_seen == 16
    # Classes are interleaved in a random order, not one after another in every epoch.
    orders = {tuple(s.meta["class"] for s in sentences if s.meta["epoch"] == e) for e in range(3)}
    assert len(orders) > 1


def test_images_per_shot_and_n_shots_set_the_length(root):
    sentences = list(category_sentences(root, SIZE, images_per_shot=3, n_shots=3, skips=SkipCounter(warn=False)))
    assert [len(s) for s in sentences] == [9] and sentences[0].meta["class"] == "n01"


def test_bad_inputs_are_skipped_or_raised(root, marked_image):
    bad = str(write_truncated_png(root / "n01" / "n01_4.png", marked_image(4)))
    loose = str(write_png(root / "stray.png", marked_image(24)))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning) as warned:
        sentences = list(category_sentences(root, SIZE, images_per_shot=2, n_shots=2, skips=skips))
    assert any("n01_4.png: skipped (truncated)" in str(w.message) for w in warned)
    assert all(bad not in s.source and loose not in s.source for s in sentences)
    assert set(skips.skipped_paths) == {bad, loose, str(root / "n03")} and skips.files_seen == 17
    assert sum(s.meta["class"] == "n01" for s in sentences) == 2  # 8 readable images left
    with pytest.raises(BadInputError, match="stray.png"):
        list(category_sentences(root, SIZE, images_per_shot=1, n_shots=1, strict=True))
    os.remove(loose)
    with pytest.raises(BadInputError, match="n03"):
        list(category_sentences(root, SIZE, images_per_shot=2, n_shots=2, strict=True))
    with pytest.raises(BadInputError, match="n01_4.png"):  # one image a sentence: every image is read
        list(category_sentences(root, SIZE, images_per_shot=1, n_shots=1, strict=True))


def test_deterministic_given_seed(root):
    def draw(seed):
        return [
            s.source
            for s in category_sentences(
                root, SIZE, images_per_shot=2, n_shots=1, n_epochs=2, rng_seed=seed, skips=SkipCounter(warn=False)
            )
        ]

    assert draw(0) == draw(0) and draw(0) != draw(1)

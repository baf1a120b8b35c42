"""Image-sequence sentences (ordered frames at a random stride) and groups of unrelated images."""

import os
import re

import pytest

from data_pipelines.sequences import image_sentences, sequence_sentences
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, write_truncated_png


def frame_number(path):
    return int(re.fullmatch(r"frame_(\d+)\.png", os.path.basename(path)).group(1))


def test_frames_in_order_at_a_fitting_stride(frame_folder):
    # Unpadded names: frame_10 must come after frame_9, not after frame_1.
    folders = [frame_folder("a", 12, zero_pad=False), frame_folder("b", 7)]
    skips = SkipCounter()
    sentences = list(sequence_sentences(folders, SIZE, n_frames=4, max_stride=4, n_epochs=8, skips=skips))
    assert len(sentences) == 2 * 8
    for sentence in sentences:
        start, stride = sentence.meta["start"], sentence.meta["stride"]
        assert sentence.kind == "sequence" and len(sentence) == 4
        assert 1 <= stride <= 4 and markers(sentence.images) == [start + i * stride for i in range(4)]
        assert [frame_number(p) for p in sentence.source] == markers(sentence.images)
    strides_b = {s.meta["stride"] for s in sentences if s.meta["folder"].endswith("b")}
    assert strides_b <= {1, 2}  # 7 frames hold 4 at stride ≤ 2 only
    assert skips.files_seen == 19 and skips.n_skipped == 0


def test_short_folder_and_bad_frame_are_recorded(frame_folder, marked_image):
    short = frame_folder("short", 3)
    full = frame_folder("full", 6)
    bad = write_truncated_png(full / "frame_002.png", marked_image(2))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning) as warned:
        # Stride 1 and 6 frames: every clip of 6 covers the bad frame, so none survives.
        assert list(sequence_sentences([short, full], SIZE, n_frames=6, max_stride=1, skips=skips)) == []
    assert [str(w.message) for w in warned] == [f"{short}: skipped (3 frames, needs 6)", f"{bad}: skipped (truncated)"]
    assert skips.skipped_paths == [str(short), str(bad)]
    with pytest.raises(BadInputError, match="frame_002.png"):
        list(sequence_sentences([full], SIZE, n_frames=6, strict=True))
    with pytest.raises(BadInputError, match="short"):
        list(sequence_sentences([short], SIZE, n_frames=6, strict=True))


def test_sequence_deterministic_given_seed(frame_folder):
    folders = [frame_folder("a", 20)]

    def clips(seed):
        return [
            (s.meta["start"], s.meta["stride"])
            for s in sequence_sentences(folders, SIZE, n_frames=3, n_epochs=6, rng_seed=seed)
        ]

    assert clips(0) == clips(0) and clips(0) != clips(1)


def test_image_groups_hold_distinct_images(frame_folder, marked_image):
    folder = frame_folder("imgs", 10)
    bad = write_truncated_png(folder / "frame_004.png", marked_image(4))
    paths = sorted(str(p) for p in folder.iterdir())
    skips = SkipCounter(warn=False)
    sentences = list(image_sentences(paths, SIZE, n_images=3, n_epochs=2, skips=skips))
    assert len(sentences) == 2 * 3
    for epoch in range(2):
        marks = [m for s in sentences if s.meta["epoch"] == epoch for m in markers(s.images)]
        assert len(set(marks)) == 9 and 4 not in marks
    assert all(s.kind == "images" and len(s) == 3 for s in sentences)
    assert skips.skipped_paths == [str(bad)]
    assert [s.source for s in image_sentences(paths, SIZE, n_images=3, rng_seed=5, skips=SkipCounter(warn=False))] == [
        s.source for s in image_sentences(paths, SIZE, n_images=3, rng_seed=5, skips=SkipCounter(warn=False))
    ]


def test_image_groups_strict_and_refusal(frame_folder, marked_image):
    folder = frame_folder("imgs", 5)
    paths = sorted(str(p) for p in folder.iterdir())
    sentences = list(image_sentences(paths, SIZE, n_images=2, n_epochs=3))
    assert [len(s) for s in sentences] == [2] * 6 and all(len(set(s.source)) == 2 for s in sentences)
    assert all(markers(s.images) == [frame_number(p) for p in s.source] for s in sentences)
    assert [s.source for s in sentences[:2]] != [s.source for s in sentences[2:4]]  # re-shuffled each epoch
    write_truncated_png(folder / "frame_001.png", marked_image(1))
    with pytest.raises(BadInputError, match="frame_001.png"):
        list(image_sentences(paths, SIZE, n_images=5, strict=True))
    with pytest.raises(ValueError, match="n_images=6"):
        list(image_sentences(paths, SIZE, n_images=6))

"""Sentences of the demo corpus, per kind, as the demo's tokenizer takes them."""

import copy
import os

import numpy as np
import pytest

from data_pipelines.colorization import to_grayscale_rgb
from data_pipelines.demo_sentences import demo_sentences
from data_pipelines.synthetic import edge_map_rgb
from lvm.media.images import read_image
from lvm.media.skips import BadInputError, SkipCounter
from lvm.media.video import read_video_frames
from tests.data_pipelines.inputs import SMALL_CORPUS, write_random_bytes

SIZE = SMALL_CORPUS["size"]
K = 4  # images per sentence in most tests (the small corpus's videos hold 10 frames)


def same_images(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("split", ["train", "val"])
def test_counts_and_shapes(small_corpus, split):
    skips = SkipCounter()
    sentences = demo_sentences(small_corpus, split, images_per_sentence=K, skips=skips)
    suffix = "" if split == "train" else "val_"
    n = {key: SMALL_CORPUS[f"n_{suffix}{key}"] for key in ("videos", "images", "sequences")}
    assert set(sentences) == {"video", "paired", "sequence"}
    assert len(sentences["video"]) == n["videos"] * (SMALL_CORPUS["n_frames"] // K)
    assert len(sentences["paired"]) == 2 * (n["images"] // (K // 2))  # two tasks
    assert len(sentences["sequence"]) == n["sequences"] * (SMALL_CORPUS["n_sequence_frames"] // K)
    for kind, kind_sentences in sentences.items():
        for sentence in kind_sentences:
            assert sentence.kind == kind and len(sentence) == K
            assert all(image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 for image in sentence.images)
            assert all(os.sep + split + os.sep in path for path in sentence.source)
    assert skips.n_skipped == 0


def test_video_sentences_are_consecutive_frames(small_corpus):
    for sentence in demo_sentences(small_corpus, "train", images_per_sentence=K)["video"]:
        start = sentence.meta["start"]
        frames = read_video_frames(sentence.source[0], SIZE)
        assert sentence.meta["stride"] == 1 and same_images(sentence.images, frames[start : start + K])


def test_video_epochs_sets_the_clips_per_video(small_corpus):
    default = demo_sentences(small_corpus, "train", images_per_sentence=K)["video"]
    more = demo_sentences(small_corpus, "train", images_per_sentence=K, video_epochs=5)["video"]
    assert len(more) == SMALL_CORPUS["n_videos"] * 5 != len(default)
    for video in {s.source[0] for s in more}:
        clips = [s for s in more if s.source[0] == video]
        assert len(clips) == 5 and [s.meta["epoch"] for s in clips] == list(range(5))


def test_paired_sentences_hold_one_task_each(small_corpus):
    paired = demo_sentences(small_corpus, "train", images_per_sentence=K)["paired"]
    relation = {"edges": edge_map_rgb, "gray": to_grayscale_rgb}
    for sentence in paired:
        xs, ys = sentence.images[0::2], sentence.images[1::2]
        assert all(np.array_equal(y, relation[sentence.meta["task"]](x)) for x, y in zip(xs, ys))
        for x_path, y_path in zip(sentence.source[0::2], sentence.source[1::2]):
            assert os.path.basename(x_path) == os.path.basename(y_path)
            assert os.path.basename(os.path.dirname(y_path)) == sentence.meta["task"]
            assert os.path.basename(os.path.dirname(x_path)) == "images"
    tasks = [s.meta["task"] for s in paired]
    assert sorted(set(tasks)) == ["edges", "gray"] and tasks != sorted(tasks)  # mixed, not one block each


def test_sequence_sentences_are_runs_of_frames(small_corpus):
    for sentence in demo_sentences(small_corpus, "val", images_per_sentence=K)["sequence"]:
        folder, start = sentence.meta["folder"], sentence.meta["start"]
        assert sentence.source == [os.path.join(folder, f"frame_{t:04d}.png") for t in range(start, start + K)]
        assert same_images(sentence.images, [read_image(p, None) for p in sentence.source])


def test_default_length_and_determinism(small_corpus):
    first = demo_sentences(small_corpus, "train", seed=3)
    again = demo_sentences(small_corpus, "train", seed=3)
    other = demo_sentences(small_corpus, "train", seed=4)
    assert all(len(s) == 8 for kind in first.values() for s in kind)
    for kind in first:
        assert [s.source for s in first[kind]] == [s.source for s in again[kind]]
        assert all(same_images(a.images, b.images) for a, b in zip(first[kind], again[kind]))
    assert [s.source for s in first["paired"]] != [s.source for s in other["paired"]]
    assert [s.meta["start"] for s in first["video"]] != [s.meta["start"] for s in other["video"]]


def test_corrupt_video_is_skipped_or_raised(tmp_path, small_corpus):
    corpus = copy.deepcopy(small_corpus)
    junk = str(write_random_bytes(tmp_path / "junk.mp4"))
    corpus["val"]["videos"].append(junk)
    skips = SkipCounter(warn=False)
    videos = demo_sentences(corpus, "val", images_per_sentence=K, skips=skips)["video"]
    assert len(videos) == SMALL_CORPUS["n_val_videos"] * (SMALL_CORPUS["n_frames"] // K)
    assert skips.skipped_paths == [junk]
    with pytest.raises(BadInputError, match="junk.mp4"):
        demo_sentences(corpus, "val", images_per_sentence=K, strict=True)


def test_refusals(small_corpus):
    with pytest.raises(ValueError, match="even"):
        demo_sentences(small_corpus, "train", images_per_sentence=5)
    with pytest.raises(KeyError, match="test"):
        demo_sentences(small_corpus, "test")

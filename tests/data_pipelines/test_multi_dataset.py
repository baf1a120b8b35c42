"""Multi-dataset sentences: each image followed by its annotations, matched by stem across folders."""

import os

import pytest

from data_pipelines.multi_dataset import match_aligned, multi_dataset_sentences
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, stems_dir, write_png, write_truncated_png

TASKS = ("image", "depth", "edge")
N_STEMS = 7


def marker_of(stem, task):
    return stem + 8 * task  # a marker names both the stem and the folder it came from


@pytest.fixture
def roots(tmp_path, marked_image):
    # Annotation folders are written in other orders: only the stem ties them together.
    for task, name in enumerate(TASKS):
        order = range(N_STEMS) if task % 2 == 0 else reversed(range(N_STEMS))
        stems_dir(tmp_path / name, order, lambda s, t=task: marked_image(marker_of(s, t)))
    return [str(tmp_path / name) for name in TASKS]


def check_layout(sentence, n_shots):
    order = sentence.meta["task_order"]
    assert sentence.kind == "multi_dataset" and len(sentence) == n_shots * len(TASKS)
    assert sorted(order) == [0, 1, 2] and sentence.meta["tasks"] == [TASKS[i] for i in order]
    marks = markers(sentence.images)
    stems = [int(stem.split("_")[1]) for stem in sentence.meta["stems"]]
    for shot, stem in enumerate(stems):
        # One shot: the same stem in every folder, in the sentence's task order.
        assert marks[3 * shot : 3 * shot + 3] == [marker_of(stem, task) for task in order]
        paths = sentence.source[3 * shot : 3 * shot + 3]
        assert [os.path.basename(os.path.dirname(p)) for p in paths] == [TASKS[i] for i in order]
        assert {os.path.basename(p) for p in paths} == {f"item_{stem:02d}.png"}
    return stems


def test_image_then_annotations_in_folder_order(roots):
    skips = SkipCounter()
    sentences = list(multi_dataset_sentences(roots, SIZE, n_shots=3, shuffle_tasks=False, n_epochs=2, skips=skips))
    assert len(sentences) == 2 * 2
    for epoch in range(2):
        stems = [st for s in sentences if s.meta["epoch"] == epoch for st in check_layout(s, 3)]
        assert len(stems) == len(set(stems)) == 6  # each stem at most once per epoch
    assert all(s.meta["task_order"] == [0, 1, 2] for s in sentences)
    assert skips.files_seen == 3 * N_STEMS and skips.n_skipped == 0


def test_shuffled_tasks_one_order_per_sentence(roots):
    sentences = list(multi_dataset_sentences("::".join(roots), SIZE, n_shots=2, n_epochs=10))
    assert len(sentences) == 10 * 3
    for sentence in sentences:
        check_layout(sentence, 2)  # every shot of a sentence follows the sentence's one order
    orders = [tuple(s.meta["task_order"]) for s in sentences]
    assert len(set(orders)) >= 4 and any(order[0] != 0 for order in orders)


def test_unmatched_and_unreadable_files_are_recorded_or_raised(tmp_path, roots, marked_image):
    lonely = str(write_png(tmp_path / "image" / "item_20.png", marked_image(20)))
    bad = str(write_truncated_png(tmp_path / "depth" / "item_03.png", marked_image(marker_of(3, 1))))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning) as warned:
        sentences = list(multi_dataset_sentences(roots, SIZE, n_shots=2, n_epochs=2, skips=skips))
    assert f"{lonely}: skipped (no match in {roots[1]}, {roots[2]})" in [str(w.message) for w in warned]
    assert all(3 not in check_layout(s, 2) for s in sentences) and len(sentences) == 2 * 3
    partners = [os.path.join(roots[0], "item_03.png"), os.path.join(roots[2], "item_03.png")]
    assert set(skips.skipped_paths) == {lonely, bad, *partners}  # recorded once across epochs
    assert len(skips.skipped) == 4
    with pytest.raises(BadInputError, match="item_20.png"):
        match_aligned(roots, SkipCounter(), strict=True)
    os.remove(lonely)
    with pytest.raises(BadInputError, match="item_03.png"):
        list(multi_dataset_sentences(roots, SIZE, n_shots=N_STEMS, strict=True))


def test_deterministic_given_seed(roots):
    def draw(seed):
        return [
            (s.meta["stems"], s.meta["task_order"])
            for s in multi_dataset_sentences(roots, SIZE, n_shots=2, n_epochs=2, rng_seed=seed)
        ]

    assert draw(0) == draw(0) and draw(0) != draw(1)


def test_refuses_too_few_stems_or_folders(roots):
    with pytest.raises(ValueError, match="matched stems"):
        list(multi_dataset_sentences(roots, SIZE, n_shots=N_STEMS + 1))
    with pytest.raises(ValueError, match="≥ 2 aligned folders"):
        list(multi_dataset_sentences(roots[0], SIZE))

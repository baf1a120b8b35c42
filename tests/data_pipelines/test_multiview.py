"""Multi-view sentences: n_frames views of one object in camera order, n_shots objects per sentence."""

import os
import shutil

import pytest

from data_pipelines.multiview import multiview_sentences
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, write_png, write_truncated_png

N_VIEWS = 5


def view_name(t):
    return f"{3 * t}.png"  # 0, 3, 6, 9, 12: camera order is numeric, not "12" < "3"


@pytest.fixture
def root(tmp_path, marked_image):
    """Objects k = 0..3 (two categories) whose view t carries marker 5k + t; object 2 in CO3D's
    layout (views under images/, masks beside them); a short object with 2 views."""
    root = tmp_path / "co3d"
    for k in range(4):
        folder = root / f"cat{k // 2}" / f"obj{k}"
        if k == 2:
            for t in range(N_VIEWS):
                write_png(folder / "masks" / view_name(t), marked_image(24))
            folder = folder / "images"
        for t in range(N_VIEWS):
            write_png(folder / view_name(t), marked_image(5 * k + t))
    for t in range(2):
        write_png(root / "cat1" / "short" / view_name(t), marked_image(20 + t))
    return root


def object_number(name):
    return int(name.rsplit("obj", 1)[1])


def test_views_in_camera_order_objects_in_turn(root):
    skips = SkipCounter(warn=False)
    sentences = list(multiview_sentences(root, SIZE, n_frames=3, n_shots=2, max_stride=4, n_epochs=4, skips=skips))
    assert len(sentences) == 4 * 2
    for sentence in sentences:
        assert sentence.kind == "multiview" and len(sentence) == 2 * 3
        marks = markers(sentence.images)
        for shot, clip in enumerate(sentence.meta["clips"]):
            k, start, stride = object_number(clip["object"]), clip["start"], clip["stride"]
            assert 1 <= stride <= 2  # 5 views hold 3 at stride ≤ 2: max_stride 4 is capped
            assert marks[3 * shot : 3 * shot + 3] == [5 * k + start + i * stride for i in range(3)]
            paths = sentence.source[3 * shot : 3 * shot + 3]
            assert [os.path.basename(p) for p in paths] == [view_name(start + i * stride) for i in range(3)]
            assert all("masks" not in p for p in paths)
    for epoch in range(4):
        seen = [c["object"] for s in sentences if s.meta["epoch"] == epoch for c in s.meta["clips"]]
        assert sorted(seen) == ["cat0/obj0", "cat0/obj1", "cat1/obj2", "cat1/obj3"]  # each once per epoch
    assert {c["stride"] for s in sentences for c in s.meta["clips"]} == {1, 2}
    assert skips.skipped_paths == [str(root / "cat1" / "short")] and skips.files_seen == 4 * N_VIEWS + 2


def test_n_frames_and_n_shots_set_the_layout(root):
    sentences = list(multiview_sentences(root, SIZE, n_frames=5, n_shots=4, skips=SkipCounter(warn=False)))
    assert len(sentences) == 1 and len(sentences[0]) == 20
    assert all(c["stride"] == 1 and c["start"] == 0 for c in sentences[0].meta["clips"])


def test_bad_view_and_short_object_are_recorded_or_raised(root, marked_image):
    bad = str(write_truncated_png(root / "cat0" / "obj1" / view_name(2), marked_image(7)))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning) as warned:
        # All 5 views at stride 1: obj1's clip always hits the bad view, so obj1 never appears.
        sentences = list(multiview_sentences(root, SIZE, n_frames=5, n_shots=1, n_epochs=2, skips=skips))
    assert len(sentences) == 2 * 3 and all(bad not in s.source for s in sentences)
    assert sorted(str(w.message) for w in warned) == [
        f"{bad}: skipped (truncated)",
        f"{root / 'cat1' / 'short'}: skipped (2 views, needs 5)",
    ]
    assert set(skips.skipped_paths) == {bad, str(root / "cat1" / "short")}
    with pytest.raises(BadInputError, match="short"):
        list(multiview_sentences(root, SIZE, n_frames=3, strict=True))
    shutil.rmtree(root / "cat1" / "short")
    with pytest.raises(BadInputError, match=view_name(2)):
        list(multiview_sentences(root, SIZE, n_frames=5, n_shots=1, strict=True))


def test_deterministic_given_seed(root):
    def draw(seed):
        return [
            s.meta["clips"]
            for s in multiview_sentences(
                root, SIZE, n_frames=2, n_shots=2, n_epochs=3, rng_seed=seed, skips=SkipCounter(warn=False)
            )
        ]

    assert draw(0) == draw(0) and draw(0) != draw(1)

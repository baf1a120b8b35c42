"""Multi-sequence sentences: the same frame indices from every aligned folder, n_shots examples."""

import os

import pytest

from data_pipelines.multi_sequence import aligned_folders, multi_sequence_sentences
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, write_png, write_truncated_png

STREAMS = ("rgb", "depth")
N = 8  # frames per folder


@pytest.fixture
def tree(tmp_path, marked_image):
    """rgb/clip{0,1,2} and depth/clip{0,1,2}: frame t of stream r carries marker t + 10·r (frame
    names unpadded, so numeric order matters); rgb/lonely has no depth."""

    def write_folder(folder, n, stream):
        for t in range(n):
            write_png(folder / f"{t}.png", marked_image(t + 10 * stream))

    for k in range(3):
        for r, stream in enumerate(STREAMS):
            write_folder(tmp_path / stream / f"clip{k}", N, r)
    write_folder(tmp_path / "rgb" / "lonely", N, 0)
    write_folder.tmp = tmp_path
    return write_folder


def patterns(tree):
    return [str(tree.tmp / stream / "*") for stream in STREAMS]


def check_example(images, paths, clip, interleave=False):
    start, stride = clip["start"], clip["stride"]
    times = [start + i * stride for i in range(len(images) // 2)]
    per_stream = [[t + 10 * r for t in times] for r in range(2)]
    expected = [m for pair in zip(*per_stream) for m in pair] if interleave else per_stream[0] + per_stream[1]
    assert markers(images) == expected
    assert {os.path.basename(os.path.dirname(p)) for p in paths} == {clip["key"]}
    assert sorted(os.path.basename(p) for p in paths) == sorted(f"{t}.png" for t in times for _ in STREAMS)


def test_same_frames_from_every_folder(tree):
    skips = SkipCounter(warn=False)
    sentences = list(
        multi_sequence_sentences(patterns(tree), SIZE, n_frames=3, n_shots=2, max_stride=4, n_epochs=6, skips=skips)
    )
    assert len(sentences) == 6  # 3 aligned clips → one sentence of 2 per epoch
    for sentence in sentences:
        assert sentence.kind == "multi_sequence" and len(sentence) == 2 * 2 * 3
        assert len({c["key"] for c in sentence.meta["clips"]}) == 2
        for shot, clip in enumerate(sentence.meta["clips"]):
            block = slice(6 * shot, 6 * shot + 6)
            check_example(sentence.images[block], sentence.source[block], clip)
            assert 1 <= clip["stride"] <= 3  # 8 frames hold 3 at stride ≤ 3: max_stride 4 is capped
    assert skips.skipped_paths == [str(tree.tmp / "rgb" / "lonely")]
    assert skips.files_seen == 3 * 2 * N


def test_interleaved_frames_and_separator_string(tree):
    sentences = list(
        multi_sequence_sentences(
            "::".join(patterns(tree)),
            SIZE,
            n_frames=2,
            n_shots=1,
            interleave_frames=True,
            skips=SkipCounter(warn=False),
        )
    )
    assert len(sentences) == 3
    for sentence in sentences:
        check_example(sentence.images, sentence.source, sentence.meta["clips"][0], interleave=True)


def test_keys_from_middle_wildcards_and_plain_folders(tmp_path, marked_image):
    # CO3D: <category>/<object>/{images,masks}; plain folders form one group.
    for obj in ("car/1", "car/2", "dog/1"):
        for stream in ("images", "masks"):
            for t in range(3):
                write_png(tmp_path / obj / stream / f"f{t}.png", marked_image(t))
    skips = SkipCounter()
    groups = aligned_folders([str(tmp_path / "*" / "*" / "images"), str(tmp_path / "*" / "*" / "masks")], skips)
    assert [key for key, _ in groups] == ["car/1", "car/2", "dog/1"]
    assert all(
        a.endswith(os.path.join(key, "images")) and b.endswith(os.path.join(key, "masks")) for key, (a, b) in groups
    )
    plain = [str(tmp_path / "car" / "1" / "images"), str(tmp_path / "dog" / "1" / "masks")]
    assert aligned_folders(plain, skips) == [("", plain)] and skips.n_skipped == 0
    with pytest.raises(ValueError, match="wildcard"):
        aligned_folders([plain[0], str(tmp_path / "*" / "*" / "masks")], skips)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        aligned_folders([str(tmp_path / "nowhere" / "*")], skips)


def test_bad_groups_and_frames_are_recorded_or_raised(tree, marked_image):
    os.remove(tree.tmp / "depth" / "clip1" / f"{N - 1}.png")  # counts differ: 8 vs 7
    bad = str(write_truncated_png(tree.tmp / "depth" / "clip2" / "4.png", marked_image(14)))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning) as warned:
        # All 8 frames at stride 1: clip2 always hits the bad frame, so only clip0 gives sentences.
        sentences = list(multi_sequence_sentences(patterns(tree), SIZE, n_frames=N, n_shots=1, n_epochs=2, skips=skips))
    assert [s.meta["clips"][0]["key"] for s in sentences] == ["clip0", "clip0"]
    messages = [str(w.message) for w in warned]
    assert (
        f"{tree.tmp / 'depth' / 'clip1'}: skipped (aligned folders hold different numbers of frames (8, 7))" in messages
    )
    assert set(skips.skipped_paths) == {
        bad,
        str(tree.tmp / "rgb" / "lonely"),
        str(tree.tmp / "rgb" / "clip1"),
        str(tree.tmp / "depth" / "clip1"),
    }
    with pytest.raises(BadInputError, match="lonely"):
        list(multi_sequence_sentences(patterns(tree), SIZE, n_frames=2, strict=True))
    with pytest.raises(BadInputError, match="clip0: 8 frames, needs 9"):
        list(multi_sequence_sentences([str(tree.tmp / s / "clip0") for s in STREAMS], SIZE, n_frames=9, strict=True))
    with pytest.raises(BadInputError, match="4.png"):
        list(multi_sequence_sentences([str(tree.tmp / s / "clip2") for s in STREAMS], SIZE, n_frames=N, strict=True))


def test_deterministic_given_seed(tree):
    def draw(seed):
        return [
            s.meta["clips"]
            for s in multi_sequence_sentences(
                patterns(tree), SIZE, n_frames=2, n_epochs=3, rng_seed=seed, skips=SkipCounter(warn=False)
            )
        ]

    assert draw(0) == draw(0) and draw(0) != draw(1)

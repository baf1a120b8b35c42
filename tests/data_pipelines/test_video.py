"""Video sentences: frames of one clip in time order, one sentence per (video, stride, epoch)."""

import pytest

from data_pipelines.video import video_sentences
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from tests.data_pipelines.inputs import SIZE, markers, write_marked_video, write_random_bytes


@pytest.fixture
def videos(tmp_path):
    # Video k's frame t carries marker 10·k + t, so a frame names both its video and its time.
    return [str(write_marked_video(tmp_path / f"v{k}.mp4", n_frames=10, first=10 * k)) for k in range(2)]


def test_clips_are_frames_in_time_order(videos):
    skips = SkipCounter()
    sentences = list(video_sentences(videos, SIZE, n_frames=4, strides=(1, 2), n_epochs=2, skips=skips))
    assert len(sentences) == 2 * 2 * 2  # videos × epochs × strides
    for sentence in sentences:
        k = videos.index(sentence.source[0])
        start, stride = sentence.meta["start"], sentence.meta["stride"]
        assert sentence.kind == "video" and len(sentence) == 4
        assert all(image.shape == (SIZE, SIZE, 3) for image in sentence.images)
        assert markers(sentence.images) == [10 * k + start + i * stride for i in range(4)]
    assert [s.meta["stride"] for s in sentences[:4]] == [1, 2, 1, 2]
    assert skips.files_seen == 2 and skips.n_skipped == 0


def test_a_folder_of_videos_gives_the_same_sentences_as_its_file_list(videos, tmp_path):
    from_folder = list(video_sentences([str(tmp_path)], SIZE, n_frames=4, strides=(2,)))
    from_files = list(video_sentences(videos, SIZE, n_frames=4, strides=(2,)))
    assert [(s.source, s.meta) for s in from_folder] == [(s.source, s.meta) for s in from_files]
    assert len(from_folder) == 2


def test_too_short_for_a_stride_is_recorded(videos):
    skips = SkipCounter(warn=False)
    sentences = list(video_sentences(videos[:1], SIZE, n_frames=4, strides=(1, 4), n_epochs=3, skips=skips))
    assert [s.meta["stride"] for s in sentences] == [1, 1, 1]  # span at stride 4 is 13 > 10 frames
    assert len(skips.skipped) == 1 and "stride 4" in skips.skipped[0][1]


def test_corrupt_video_is_skipped_counted_or_raised(tmp_path, videos):
    junk = str(write_random_bytes(tmp_path / "junk.mp4"))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning, match="junk.mp4"):
        sentences = list(video_sentences([videos[0], junk, videos[1]], SIZE, n_frames=4, skips=skips))
    assert [s.source[0] for s in sentences] == [videos[0], videos[1]]
    assert skips.files_seen == 3 and skips.skipped_paths == [junk]
    with pytest.raises(BadInputError, match="junk.mp4"):
        list(video_sentences([videos[0], junk], SIZE, n_frames=4, strict=True))


def test_deterministic_given_seed(videos):
    def starts(seed):
        return [s.meta["start"] for s in video_sentences(videos, SIZE, n_frames=3, n_epochs=4, rng_seed=seed)]

    assert starts(0) == starts(0)
    assert starts(0) != starts(1)


def test_refuses_nonsense_arguments(videos):
    with pytest.raises(ValueError, match="n_frames"):
        list(video_sentences(videos, SIZE, n_frames=0))
    with pytest.raises(ValueError, match="strides"):
        list(video_sentences(videos, SIZE, n_frames=2, strides=()))

"""Reading media: finding files, images with PIL, video frames as the original reads them, skip bookkeeping."""

import io

import numpy as np
import pytest
from PIL import Image

from lvm.media.files import expand_inputs, list_files
from lvm.media.images import image_loader, read_image, read_image_or_skip
from lvm.media.skips import BadInputError, SkipCounter, SkippedInputWarning
from lvm.media.video import read_video_frames
from tests.data_pipelines.inputs import (
    SIZE,
    markers,
    read_marker,
    write_marked_video,
    write_png,
    write_random_bytes,
    write_truncated_png,
)
from tests.original_video import read_frames_the_original_way, write_detailed_video


def test_list_files_sorts_naturally_and_filters(tmp_path, marked_image):
    for name in ("frame_10.png", "frame_2.PNG", "frame_1.jpg", ".hidden.png"):
        Image.fromarray(marked_image(0)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    write_png(tmp_path / "sub" / "frame_3.png", marked_image(0))
    found = [p.removeprefix(str(tmp_path) + "/") for p in list_files(tmp_path, [".png", ".jpg"])]
    assert found == ["frame_1.jpg", "frame_2.PNG", "frame_10.png", "sub/frame_3.png"]
    flat = [p.removeprefix(str(tmp_path) + "/") for p in list_files(tmp_path, ["png"], recursive=False)]
    assert flat == ["frame_2.PNG", "frame_10.png"]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_files(tmp_path / "missing", [".png"])


def test_expand_inputs_keeps_the_given_order_and_expands_folders_globs_and_lists(tmp_path, marked_image):
    for name in ("b/2.png", "b/10.png", "c/x.png", "c/y.jpg"):
        write_png(tmp_path / name, marked_image(0))
    (tmp_path / "list.txt").write_text("# listed\nc/x.png\n\nb/2.png\n")
    given = [
        tmp_path / "c" / "y.jpg",
        tmp_path / "b",
        f"{tmp_path}/c/*.png",
        tmp_path / "list.txt",
        tmp_path / "gone.png",
    ]
    found = [p.removeprefix(str(tmp_path) + "/") for p in expand_inputs(given, [".png", ".jpg"])]
    # A missing file stays: the builder that reads it records the skip, naming it.
    assert found == ["c/y.jpg", "b/2.png", "b/10.png", "c/x.png", "c/x.png", "b/2.png", "gone.png"]
    assert expand_inputs(f"{tmp_path / 'b'}::{tmp_path / 'c' / 'y.jpg'}", [".png"]) == [
        str(tmp_path / "b" / "2.png"),
        str(tmp_path / "b" / "10.png"),
        str(tmp_path / "c" / "y.jpg"),
    ]


def test_read_image_gives_hwc_uint8_rgb(tmp_path, marked_image):
    image = marked_image(3)
    path = write_png(tmp_path / "a.png", image)
    assert np.array_equal(read_image(path, None), image)
    assert np.array_equal(read_image(path, SIZE), image)
    small = read_image(path, 16)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8
    # Gray and RGBA files come back as 3-channel RGB.
    Image.fromarray(image[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "gray.png", SIZE).shape == (SIZE, SIZE, 3)
    assert np.array_equal(read_image(tmp_path / "rgba.png", SIZE), image)


@pytest.mark.parametrize("make_bad", ["truncated", "random"])
def test_read_image_names_the_corrupt_file(tmp_path, marked_image, make_bad):
    path = tmp_path / "bad.png"
    if make_bad == "truncated":
        write_truncated_png(path, marked_image(1))
    else:
        write_random_bytes(path)
    with pytest.raises(BadInputError) as caught:
        read_image(path, SIZE)
    assert caught.value.path == str(path) and str(caught.value).startswith(str(path))


def test_read_image_or_skip_records_warns_or_raises(tmp_path, marked_image):
    bad = write_truncated_png(tmp_path / "bad.png", marked_image(1))
    skips = SkipCounter()
    with pytest.warns(SkippedInputWarning, match="bad.png"):
        assert read_image_or_skip(bad, SIZE, skips, strict=False) is None
    assert skips.n_skipped == 1 and skips.skipped_paths == [str(bad)]
    with pytest.raises(BadInputError, match="bad.png"):
        read_image_or_skip(bad, SIZE, SkipCounter(), strict=True)


def test_image_loader_records_a_bad_file_once(tmp_path, marked_image):
    bad = str(write_truncated_png(tmp_path / "bad.png", marked_image(1)))
    skips = SkipCounter(warn=False)
    load = image_loader(SIZE, skips, strict=False)
    assert load(bad) is None and load(bad) is None
    assert skips.skipped == [(bad, "truncated")]


def test_skip_counter_summary_and_report():
    skips = SkipCounter(warn=False)
    skips.saw(3)
    skips.skip("a.mp4", "invalid data")
    skips.skip("a.mp4", "too short for stride 2")
    skips.skip("b.png", "truncated")
    assert skips.n_skipped == 2
    assert skips.summary().startswith("skipped 2 of 3 files: a.mp4 (invalid data)")
    out = io.StringIO()
    skips.report(out)
    assert "b.png (truncated)" in out.getvalue()
    assert SkipCounter().summary() == "skipped 0 of 0 files"


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_read_video_frames_in_time_order(tmp_path, codec):
    path = write_marked_video(tmp_path / "v.mp4", n_frames=12, codec=codec)
    frames = read_video_frames(path, None)
    assert len(frames) == 12 and frames[0].shape == (SIZE, SIZE, 3) and frames[0].dtype == np.uint8
    assert markers(frames) == list(range(12))
    resized = read_video_frames(path, 16)
    assert resized[0].shape == (16, 16, 3) and read_marker(np.kron(resized[5], np.ones((2, 2, 1)))) == 5


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
@pytest.mark.parametrize("size, center_crop", [(40, None), (24, 0.7), (200, None)])
def test_video_frames_are_the_originals_pixels(tmp_path, codec, size, center_crop):
    # 160×120 → 40 or 24 (shrinking, where OpenCV's INTER_LINEAR and PIL's antialiasing bilinear part),
    # and → 200 (enlarging); the reference decodes with OpenCV as the original does.
    path = write_detailed_video(tmp_path / "v.mp4", codec=codec)
    frames = read_video_frames(path, size, center_crop)
    reference = read_frames_the_original_way(path, size, center_crop or 1.0)
    assert len(frames) == len(reference) == 6
    for ours, theirs in zip(frames, reference):
        assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, theirs)
    if size < 120:  # what this replaced: PIL's bilinear, which antialiases, gives other pixels
        full = read_video_frames(path, None, center_crop)[0]
        pil = np.asarray(Image.fromarray(full).resize((size, size), Image.BILINEAR))
        assert np.abs(pil.astype(int) - reference[0]).mean() > 5


def test_video_center_crop_is_checked_before_the_file_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"center_crop: expected a fraction in \(0, 1\], got 1.5"):
        read_video_frames(tmp_path / "not_read.mp4", 32, center_crop=1.5)


def test_read_video_frames_names_corrupt_and_truncated_files(tmp_path):
    with pytest.raises(BadInputError, match="junk.mp4"):
        read_video_frames(write_random_bytes(tmp_path / "junk.mp4"), SIZE)
    good = write_marked_video(tmp_path / "v.mp4", n_frames=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BadInputError, match="cut.mp4"):
        read_video_frames(cut, SIZE)

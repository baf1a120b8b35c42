"""The demo corpus: real, readable files; a val split disjoint from train; deterministic; fast."""

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from data_pipelines.colorization import to_grayscale_rgb
from data_pipelines.synthetic import (
    CORPUS_FILE,
    VAL_STRIP,
    edge_map_rgb,
    load_demo_corpus,
    make_demo_corpus,
    moving_shapes_frames,
    pick_video_codec,
    random_crop,
)
from lvm.media.files import list_files
from lvm.media.images import read_image
from lvm.media.video import read_video_frames
from tests.data_pipelines.inputs import SMALL_CORPUS

SIZE = SMALL_CORPUS["size"]


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def test_videos_are_real_h264_or_mpeg4_files(small_corpus):
    expected = "h264" if "libx264" in av.codecs_available else "mpeg4"
    assert small_corpus["codec"] == pick_video_codec()
    for split, n_videos in (("train", SMALL_CORPUS["n_videos"]), ("val", SMALL_CORPUS["n_val_videos"])):
        videos = small_corpus[split]["videos"]
        assert len(videos) == n_videos and videos == list_files(small_corpus[split]["videos_dir"], [".mp4"])
        for path in videos:
            with av.open(path) as container:
                assert container.streams.video[0].codec_context.name == expected
            frames = read_video_frames(path, None)
            assert len(frames) == SMALL_CORPUS["n_frames"] >= 8
            assert frames[0].shape == (SIZE, SIZE, 3)
            assert all(np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(frames, frames[1:]))  # motion


def test_images_edges_and_gray_match_by_stem(small_corpus):
    for split, n_images in (("train", SMALL_CORPUS["n_images"]), ("val", SMALL_CORPUS["n_val_images"])):
        files = small_corpus[split]
        assert len(files["images"]) == n_images
        assert (
            [stem(p) for p in files["images"]] == [stem(p) for p in files["edges"]] == [stem(p) for p in files["gray"]]
        )
        for image_path, edges_path, gray_path in zip(files["images"], files["edges"], files["gray"]):
            image = read_image(image_path, None)
            assert image.shape == (SIZE, SIZE, 3) and image.std() > 5  # a photograph, not a flat colour
            edges = read_image(edges_path, None)
            assert np.array_equal(edges, edge_map_rgb(image))
            assert np.array_equal(read_image(gray_path, None), to_grayscale_rgb(image))


def test_edge_map_is_bright_along_edges_and_black_in_flat_regions():
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = (200, 60, 30)  # an orange square on black
    edges = edge_map_rgb(image)
    assert edges.shape == image.shape and edges.dtype == np.uint8
    assert np.array_equal(edges[..., 0], edges[..., 1]) and np.array_equal(edges[..., 0], edges[..., 2])
    border = edges[16, 20:44, 0], edges[20:44, 47, 0]  # the square's top and right sides
    assert all(side.min() > 100 for side in border)
    assert edges[26:38, 26:38].max() == 0 and edges[:6].max() == 0  # inside and far outside: no edge
    assert edge_map_rgb(np.full_like(image, 128)).max() == 0  # a flat image has none


def test_sequences_are_folders_of_ordered_frames(small_corpus):
    for split in ("train", "val"):
        for folder in small_corpus[split]["sequences"]:
            frames = list_files(folder, [".png"])
            assert [os.path.basename(p) for p in frames] == [
                f"frame_{t:04d}.png" for t in range(SMALL_CORPUS["n_sequence_frames"])
            ]
            assert read_image(frames[0], None).shape == (SIZE, SIZE, 3)


def test_val_split_is_disjoint_from_train(small_corpus):
    train, val = small_corpus["train"], small_corpus["val"]
    for key in ("videos", "sequences", "images", "edges", "gray"):
        assert not set(train[key]) & set(val[key])
        assert all(os.sep + "val" + os.sep in p for p in val[key])
    # Different scenes, not the same scene under another name.
    train_first = [read_video_frames(p, None)[0] for p in train["videos"]]
    for path in val["videos"]:
        first = read_video_frames(path, None)[0]
        assert all(np.abs(first.astype(int) - other).mean() > 5 for other in train_first)
    train_crops = [read_image(p, None) for p in train["images"]]
    for path in val["images"]:
        crop = read_image(path, None)
        assert not any(np.array_equal(crop, other) for other in train_crops)


def test_crops_come_from_held_out_parts_of_the_photo():
    # A photo whose pixels say which part they lie in: 0 in train's part, 255 in val's strip.
    height, width = 300, 480
    boundary = int(round(width * (1 - VAL_STRIP)))
    photo = np.zeros((height, width, 3), np.uint8)
    photo[:, boundary:] = 255
    for i in range(30):
        rng = np.random.default_rng(i)
        assert random_crop(photo, "train", SIZE, rng).max() == 0
        assert random_crop(photo, "val", SIZE, rng).min() == 255


def test_corpus_json_is_relative_and_loads_back(small_corpus):
    with open(small_corpus["corpus_json"]) as f:
        stored = json.load(f)
    assert not os.path.isabs(stored["train"]["videos"][0])
    assert stored["params"] == SMALL_CORPUS | {"fps": 8}
    assert load_demo_corpus(small_corpus["root"]) == small_corpus


def test_deterministic_given_seed(tmp_path, small_corpus):
    again = make_demo_corpus(tmp_path / "again", **SMALL_CORPUS)
    for key in ("images", "edges", "gray"):
        for a, b in zip(small_corpus["train"][key], again["train"][key]):
            assert Path(a).read_bytes() == Path(b).read_bytes()
    # Videos too, byte for byte: with a bit rate instead of a fixed quantiser, x264 encoded the same frames
    # differently now and then (decoded up to 4 levels apart), and a seeded demo run's figures moved with it.
    for split in ("train", "val"):
        for a, b in zip(small_corpus[split]["videos"], again[split]["videos"], strict=True):
            assert Path(a).read_bytes() == Path(b).read_bytes(), a
    frames = [moving_shapes_frames(4, SIZE, np.random.default_rng(s)) for s in (0, 0, 1)]
    assert all(np.array_equal(x, y) for x, y in zip(frames[0], frames[1]))
    assert not np.array_equal(frames[0][0], frames[2][0])


def test_reuse_overwrite_and_refusals(tmp_path):
    small = dict(SMALL_CORPUS, n_videos=1, n_val_videos=1, n_images=2, n_val_images=1, n_sequences=1, n_val_sequences=1)
    out = tmp_path / "c"
    make_demo_corpus(out, **small)
    stamp = os.stat(out / CORPUS_FILE).st_mtime_ns
    make_demo_corpus(out, **small)  # same arguments: reused, not rewritten
    assert os.stat(out / CORPUS_FILE).st_mtime_ns == stamp
    changed = make_demo_corpus(out, **dict(small, n_images=3))  # other arguments: replaced
    assert len(changed["train"]["images"]) == 3 and len(os.listdir(out / "train" / "images")) == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a corpus")
    with pytest.raises(FileExistsError, match="other"):
        make_demo_corpus(tmp_path / "other", **small)
    with pytest.raises(ValueError, match="size"):
        make_demo_corpus(tmp_path / "odd", **dict(small, size=33))
    with pytest.raises(ValueError, match="n_frames"):
        make_demo_corpus(tmp_path / "none", **dict(small, n_frames=0))


def test_defaults_make_the_documented_corpus(tmp_path):
    corpus = make_demo_corpus(tmp_path / "demo")
    assert (len(corpus["train"]["videos"]), len(corpus["val"]["videos"])) == (48, 8)
    assert len(read_video_frames(corpus["val"]["videos"][0], None)) == 16

"""Curation filters on real photographs: resolution and aspect from the original file, near-duplicates
(resized, mirrored, noised, re-compressed copies) by pHash, and the counts of what was dropped."""

import random

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data as skdata

from data_pipelines.curation import Curator, HashIndex, media_size, perceptual_hashes
from data_pipelines.synthetic import write_video_file

PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket", "hubble_deep_field", "retina", "brick")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """Originals (longer side 256), near-duplicates of four of them, a tiny and a very wide image."""
    root = tmp_path_factory.mktemp("curation")
    paths = {}

    def save(name: str, image: Image.Image, suffix: str = ".png", **options) -> None:
        paths[name] = str(root / f"{name}{suffix}")
        image.save(paths[name], **options)

    originals = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(skdata, name)())
        image.thumbnail((256, 256))
        originals[name] = image
        save(name, image)
    save("astronaut_small", originals["astronaut"].resize((96, 96)))
    save("coffee_mirrored", ImageOps.mirror(originals["coffee"]))
    pixels = np.asarray(originals["chelsea"]).astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 12, pixels.shape)
    save("chelsea_noisy", Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)))
    width, height = originals["chelsea"].size
    save("chelsea_cropped", originals["chelsea"].crop((8, 6, width - 8, height - 6)))  # 3 % off each side
    save("camera_jpeg", originals["camera"], ".jpg", quality=40)
    save("tiny", originals["rocket"].resize((24, 20)))
    save("wide", originals["brick"].resize((400, 50)))
    return paths


def distance(a: str, b: str) -> int:
    return (perceptual_hashes(a)[0] ^ perceptual_hashes(b)[0]).bit_count()


def test_min_side_reads_the_original_size_from_the_header(images):
    curator = Curator(min_side=32)
    decisions = {name: curator.admit(images[name]) for name in ("astronaut", "tiny", "wide", "rocket")}
    assert decisions == {"astronaut": True, "tiny": False, "wide": True, "rocket": True}
    assert curator.files_rejected == {"min_side": 1} and curator.sentences_dropped == {"min_side": 1}
    assert "24×20: shorter side 20 < min_side 32" in curator.rejected[images["tiny"]].detail
    assert not Curator(min_side=64).admit(images["wide"])  # 400×50: the short side is 50
    assert media_size(images["wide"]) == (400, 50)


def test_max_aspect_keeps_ordinary_photos_and_drops_panoramas(images):
    curator = Curator(max_aspect=2.0)
    kept = [name for name in ("astronaut", "coffee", "rocket", "wide", "tiny") if curator.admit(images[name])]
    assert kept == ["astronaut", "coffee", "rocket", "tiny"]  # coffee 4:3 and rocket 3:2 are ≤ 2
    assert curator.files_rejected == {"max_aspect": 1}
    assert "aspect 8.00 > max_aspect 2.0" in curator.rejected[images["wide"]].detail
    assert curator.admit(images["wide"]) is False  # remembered: counted once as a file, twice as sentences
    assert curator.files_rejected == {"max_aspect": 1} and curator.sentences_dropped == {"max_aspect": 2}


def test_near_duplicates_are_dropped_and_the_first_seen_is_kept(images):
    curator = Curator(dedup_max_distance=8)
    order = [
        "astronaut",
        "coffee",
        "astronaut_small",
        "coffee_mirrored",
        "chelsea",
        "chelsea_noisy",
        "chelsea_cropped",
        "camera",
        "camera_jpeg",
        "rocket",
        "hubble_deep_field",
        "retina",
        "brick",
    ]
    kept = [name for name in order if curator.admit(images[name])]
    assert kept == ["astronaut", "coffee", "chelsea", "camera", "rocket", "hubble_deep_field", "retina", "brick"]
    assert curator.files_rejected == {"duplicate": 5} and curator.sentences_dropped == {"duplicate": 5}
    assert f"near-duplicate of {images['coffee']} mirrored" in curator.rejected[images["coffee_mirrored"]].detail
    assert f"near-duplicate of {images['astronaut']} (" in curator.rejected[images["astronaut_small"]].detail
    assert curator.admit(images["astronaut"])  # a kept file stays kept when it comes again

    # The other way round, the copies came first and are the ones kept.
    reverse = Curator(dedup_max_distance=8)
    assert [reverse.admit(images[n]) for n in ("camera_jpeg", "camera", "chelsea_noisy", "chelsea")] == [
        True,
        False,
        True,
        False,
    ]


def test_the_distance_threshold_is_inclusive(images):
    d = distance(images["chelsea"], images["chelsea_cropped"])
    assert 0 < d <= 8  # the crop moved some bits, not many
    for threshold, duplicate in ((d, True), (d - 1, False)):
        curator = Curator(dedup_max_distance=threshold)
        assert curator.admit(images["chelsea"])
        assert curator.admit(images["chelsea_cropped"]) is not duplicate
    # Different photographs are far apart, so the default-ish threshold of 8 has a wide margin.
    originals = [images[name] for name in PHOTOS]
    assert min(distance(a, b) for i, a in enumerate(originals) for b in originals[i + 1 :]) > 16


def test_a_sentence_is_dropped_with_any_rejected_file_and_keeps_nothing(images):
    curator = Curator(min_side=32, dedup_max_distance=8)
    assert not curator.admit_sentence([images["coffee"], images["tiny"]])
    assert curator.sentences_dropped == {"min_side": 1}
    # coffee's sentence was dropped, so coffee never entered the index: its mirror image is new.
    assert curator.admit_sentence([images["coffee_mirrored"], images["rocket"]])
    assert not curator.admit_sentence([images["coffee"], images["astronaut"]])
    assert not curator.admit_sentence([images["astronaut"], images["astronaut_small"]])  # within one sentence too
    assert curator.sentences_dropped == {"min_side": 1, "duplicate": 2}
    assert curator.files_rejected == {"min_side": 1, "duplicate": 2}
    assert curator.sentences_kept == 1
    summary = curator.summary()
    assert summary["sentences_dropped"] == {"min_side": 1, "duplicate": 2}
    assert {entry["path"] for entry in summary["rejected"]} == {
        images["tiny"],
        images["coffee"],
        images["astronaut_small"],
    }
    # The same file twice (colorization sentences hold (gray, colour) of one path) is not its own duplicate.
    assert curator.admit_sentence([images["retina"], images["retina"]])


def test_files_of_one_group_are_not_duplicates_of_each_other(images):
    curator = Curator(dedup_max_distance=8)
    chelsea, noisy, cropped = images["chelsea"], images["chelsea_noisy"], images["chelsea_cropped"]
    assert curator.admit_sentence([chelsea, noisy, images["camera"]], ["clip-a", "clip-a", "clip-b"])
    assert curator.admit(cropped, group="clip-a")  # later, in another sentence, still clip-a
    assert not curator.admit_sentence([images["coffee"], images["camera_jpeg"]], ["clip-c", "clip-c"])
    assert curator.rejected[images["camera_jpeg"]].reason == "duplicate"  # of camera, in clip-b
    # Within one sentence too: two files of different groups are compared.
    assert not curator.admit_sentence(
        [images["rocket"], images["astronaut"], images["astronaut_small"]], ["clip-d", "clip-d", "clip-e"]
    )
    with pytest.raises(ValueError, match="2 groups for 1 sources"):
        curator.admit_sentence([images["retina"]], ["a", "b"])


def test_videos_are_sized_from_their_stream_and_not_hashed(tmp_path, images):
    frames = [np.full((32, 96, 3), 40 * t, np.uint8) for t in range(3)]
    wide = write_video_file(tmp_path / "wide.mp4", frames)
    twin = write_video_file(tmp_path / "twin.mp4", frames)
    assert media_size(wide) == (96, 32)
    assert not Curator(max_aspect=2).admit(wide)
    assert not Curator(min_side=48).admit(wide)
    curator = Curator(min_side=16, max_aspect=4, dedup_max_distance=8)
    assert curator.admit(wide) and curator.admit(twin)


def test_unreadable_files_and_bad_thresholds_are_named(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    curator = Curator(min_side=8)
    assert not curator.admit(junk)
    assert curator.files_rejected == {"unreadable": 1} and str(junk) in curator.rejected
    for field, value in (("min_side", 0), ("max_aspect", 0.5), ("dedup_max_distance", 64)):
        with pytest.raises(ValueError, match=f"curation.{field}"):
            Curator(**{field: value})
    assert not Curator().active and Curator(max_aspect=3).active


@pytest.mark.parametrize("max_distance", [0, 3, 8, 20])
def test_hash_index_finds_what_brute_force_finds(max_distance):
    rng = random.Random(max_distance)
    stored = [rng.getrandbits(64) for _ in range(300)]
    index = HashIndex(max_distance)
    for i, value in enumerate(stored):
        index.add(value, f"f{i}")
    queries = [rng.getrandbits(64) for _ in range(100)]
    # Near copies of stored hashes, max_distance ± 1 bits away, so both sides of the edge are probed.
    for i in range(100):
        bits = rng.sample(range(64), min(63, max(0, max_distance + rng.choice((-1, 0, 1)))))
        queries.append(stored[i] ^ sum(1 << b for b in bits))
    for query in queries:
        expected = next(
            (
                (f"f{i}", (query ^ v).bit_count())
                for i, v in enumerate(stored)
                if (query ^ v).bit_count() <= max_distance
            ),
            None,
        )
        assert index.nearest(query) == expected

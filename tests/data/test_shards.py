"""Shard writing and reading: round trip, rollover, atomicity, and errors that name the bad thing."""

import io
import json
import os
import re

import numpy as np
import pytest
import webdataset as wds

from lvm.data.manifest import expand_sources, read_manifest
from lvm.data.shards import ShardWriter, VisualSentence, iter_shard, read_sentences


def sentence(i: int, kind: str = "video", n_images: int = 3, tokens_per_image: int = 4, **meta) -> VisualSentence:
    tokens = (np.arange(n_images * tokens_per_image) * 7 + i * 13) % 8192
    return VisualSentence(tokens.astype(np.uint16), kind, [f"clip{i}.mp4"], n_images, dict(meta))


def write_set(out_dir, sentences, **kwargs) -> dict:
    with ShardWriter(out_dir, **kwargs) as writer:
        for s in sentences:
            writer.write(s)
    return json.loads((out_dir / "manifest.json").read_text())


def test_round_trip_preserves_sentences_and_manifest_counts(tmp_path):
    written = [sentence(i, kind=("video", "paired")[i % 2], n_images=1 + i % 3, stride=i) for i in range(10)]
    manifest = write_set(tmp_path, written, max_samples_per_shard=4, config={"pipeline": "test"})

    read = read_sentences(tmp_path, vocab_size=8292)
    assert len(read) == len(written)
    for w, r in zip(written, read):
        np.testing.assert_array_equal(r.tokens, w.tokens)
        assert r.tokens.dtype == np.uint16
        assert (r.kind, r.source, r.n_images, r.meta) == (w.kind, w.source, w.n_images, w.meta)
    assert len({r.key for r in read}) == len(read)

    total = sum(len(s.tokens) for s in written)
    assert manifest["version"] == 1
    assert manifest["samples"] == 10 and manifest["tokens"] == total
    assert sum(s["tokens"] for s in manifest["shards"]) == total
    assert manifest["kinds"] == {k: sum(len(s.tokens) for s in written if s.kind == k) for k in ("video", "paired")}
    assert manifest["tokens_per_image"] == 4 and manifest["vocab_size"] == 8292
    assert manifest["config"] == {"pipeline": "test"}


def test_shards_roll_over_at_max_samples(tmp_path):
    manifest = write_set(tmp_path, [sentence(i) for i in range(7)], prefix="vid", max_samples_per_shard=3)
    assert [s["path"] for s in manifest["shards"]] == ["vid-000000.tar", "vid-000001.tar", "vid-000002.tar"]
    assert [s["samples"] for s in manifest["shards"]] == [3, 3, 1]
    assert [len(list(iter_shard(tmp_path / s["path"]))) for s in manifest["shards"]] == [3, 3, 1]
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "vid-000000.tar", "vid-000001.tar", "vid-000002.tar"]


def test_unfinished_shard_never_has_its_final_name(tmp_path):
    with ShardWriter(tmp_path, max_samples_per_shard=3) as writer:
        writer.write(sentence(0))
        assert sorted(os.listdir(tmp_path)) == ["shard-000000.tar.tmp"]
        writer.write(sentence(1))
        writer.write(sentence(2))  # the shard is full: it is closed and renamed now
        assert sorted(os.listdir(tmp_path)) == ["shard-000000.tar"]
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "shard-000000.tar"]


def test_exception_inside_with_leaves_no_manifest_and_no_temp_files(tmp_path):
    write_set(tmp_path, [sentence(0)])  # an earlier, complete run in the same folder
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path, max_samples_per_shard=3) as writer:
            for i in range(5):
                writer.write(sentence(i))
            raise RuntimeError("boom")
    names = sorted(os.listdir(tmp_path))
    assert "manifest.json" not in names  # the old manifest went too: its shard was overwritten
    assert not [n for n in names if n.endswith(".tmp")]
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        expand_sources(tmp_path)


def test_writer_refuses_out_of_vocab_and_mixed_image_sizes(tmp_path):
    bad = VisualSentence(np.array([1, 2, 9000, 3], np.uint16), "video", [], 1)
    with pytest.raises(ValueError, match=r"sample 000000001.*9000 ≥ vocab_size 8292"):
        with ShardWriter(tmp_path) as writer:
            writer.write(sentence(0))
            writer.write(bad)
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ValueError, match="tokens_per_image=4"):
        with ShardWriter(tmp_path / "b") as writer:
            writer.write(sentence(0, n_images=2, tokens_per_image=4))
            writer.write(sentence(1, n_images=2, tokens_per_image=8))


def test_visual_sentence_validates_dtype_and_length():
    with pytest.raises(ValueError, match="uint16"):
        VisualSentence(np.arange(8), "video", [], 2)
    with pytest.raises(ValueError, match="multiple of n_images=3"):
        VisualSentence(np.arange(8, dtype=np.uint16), "video", [], 3)
    with pytest.raises(ValueError, match="1-D"):
        VisualSentence(np.zeros((2, 4), np.uint16), "video", [], 2)


def _raw_shard(path, samples):
    with wds.TarWriter(str(path), encoder=False) as tar:
        for sample in samples:
            tar.write(sample)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _info(n_images=1, tokens_per_image=3) -> bytes:
    info = {"kind": "video", "source": [], "n_images": n_images, "tokens_per_image": tokens_per_image}
    return json.dumps(info).encode()


def test_reader_names_shard_and_key_of_out_of_vocab_token(tmp_path):
    path = tmp_path / "bad-000000.tar"
    _raw_shard(
        path,
        [
            {"__key__": "good", "tokens.npy": _npy(np.array([1, 2, 3], np.uint16)), "json": _info()},
            {"__key__": "evil", "tokens.npy": _npy(np.array([1, 8292, 3], np.uint16)), "json": _info()},
        ],
    )
    reader = iter_shard(path, vocab_size=8292)
    assert next(reader).key == "good"
    with pytest.raises(ValueError) as error:
        next(reader)
    assert str(path) in str(error.value) and "evil" in str(error.value) and "8292" in str(error.value)


def test_reader_names_shard_and_key_of_sample_without_tokens(tmp_path):
    path = tmp_path / "bad-000000.tar"
    _raw_shard(path, [{"__key__": "lonely", "json": _info()}])
    with pytest.raises(ValueError, match=re.escape(f"{path}: sample lonely has no 'tokens.npy'")):
        list(iter_shard(path))


@pytest.mark.parametrize("field", ["shards", "tokens_per_image", "version", "shards[0].path", "shards[1].tokens"])
def test_manifest_missing_field_names_file_and_field(tmp_path, field):
    write_set(tmp_path, [sentence(i) for i in range(4)], max_samples_per_shard=2)
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if field.startswith("shards["):
        index, name = int(field[7]), field.split(".")[1]
        del manifest["shards"][index][name]
    else:
        del manifest[field]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=re.escape(f"{manifest_path}: missing field '{field}'")):
        read_manifest(manifest_path)


def test_manifest_naming_a_missing_shard_is_an_error(tmp_path):
    write_set(tmp_path, [sentence(i) for i in range(4)], max_samples_per_shard=2)
    (tmp_path / "shard-000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest.json: field 'shards\[1\].path' names .*shard-000001.tar"):
        read_manifest(tmp_path / "manifest.json")


def test_expand_sources_accepts_manifest_directory_glob_and_braces(tmp_path):
    write_set(tmp_path, [sentence(i) for i in range(5)], max_samples_per_shard=2)
    expected = [str((tmp_path / f"shard-{i:06d}.tar").resolve()) for i in range(3)]
    assert expand_sources(tmp_path / "manifest.json") == expected
    assert expand_sources(tmp_path) == expected
    assert expand_sources(f"{tmp_path}/shard-*.tar") == [str(tmp_path / f"shard-{i:06d}.tar") for i in range(3)]
    assert expand_sources(f"{tmp_path}/shard-{{000000..000002}}.tar") == expand_sources(f"{tmp_path}/shard-*.tar")
    with pytest.raises(FileNotFoundError, match="no shards found"):
        expand_sources(f"{tmp_path}/nothing-*.tar")


def test_fast_tar_reader_gives_webdatasets_samples(tmp_path):
    from lvm.data.tar_reader import plain_tar_samples

    write_set(tmp_path, [sentence(i, meta_value=i) for i in range(5)])
    shard = str(tmp_path / "shard-000000.tar")
    reference = [
        {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
        for sample in wds.WebDataset(shard, shardshuffle=False, empty_check=False)
    ]
    assert plain_tar_samples(shard) == reference and len(reference) == 5


def test_tar_with_long_member_names_is_read_by_webdataset(tmp_path):
    # Python's tarfile writes a pax header for a name over 100 characters; the fast reader hands
    # such a tar to webdataset, and the sentence still comes back whole.
    import tarfile

    key = "k" * 120
    expected = sentence(1)
    path = tmp_path / "long.tar"
    with tarfile.open(path, "w") as tar:
        for suffix, payload in (
            ("tokens.npy", _npy(expected.tokens)),
            ("json", json.dumps({"kind": "video", "source": ["a"], "n_images": 3}).encode()),
        ):
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (got,) = list(iter_shard(path))
    assert got.key == key and np.array_equal(got.tokens, expected.tokens)


def test_truncated_or_corrupt_shard_is_an_error_naming_it(tmp_path):
    write_set(tmp_path, [sentence(i) for i in range(4)])
    data = (tmp_path / "shard-000000.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: 512 * 3 + 100])
    with pytest.raises(ValueError, match=f"{re.escape(str(cut))}: truncated"):
        list(iter_shard(cut))
    flipped = bytearray(data)
    flipped[512 * 2 + 10] ^= 0xFF  # a byte of the second member's header (its name)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))}: corrupt tar header at byte 1024"):
        list(iter_shard(bad))

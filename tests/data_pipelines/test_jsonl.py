"""data_pipelines.jsonl against jsonl lines built here with numpy + the stdlib (base64, json), as the
original's tokenizer scripts write them."""

import base64
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from data_pipelines.jsonl import BadLineError, export_jsonl, import_jsonl, main
from lvm.data.manifest import read_manifest
from lvm.data.shards import read_sentences

ROOT = Path(__file__).resolve().parents[2]
TPI = 16  # tokens per image in these tests


def original_line(ids: np.ndarray, **extra) -> str:
    """A line as the original writes it: base64 of little-endian int32 bytes, written independently here."""
    raw = np.asarray(ids, dtype="<i4").tobytes()
    return json.dumps({"tokens": base64.b64encode(raw).decode("utf-8"), **extra}) + "\n"


def random_sentences(n: int, seed: int = 0, vocab: int = 8192) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, TPI * int(rng.integers(1, 6))) for _ in range(n)]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


def test_import_keeps_every_token_and_export_gives_the_same_bytes(tmp_path):
    arrays = random_sentences(23)
    arrays[3][0], arrays[5][-1] = 8291, 0  # both ends of the vocabulary
    source = write_jsonl(tmp_path / "dataset.jsonl", [original_line(a) for a in arrays])

    result = import_jsonl(
        source, tmp_path / "shards", tokens_per_image=TPI, kind="video", samples_per_shard=5, progress=False
    )
    assert (result.lines, result.sentences, result.shards, result.skipped) == (23, 23, 5, [])

    manifest = read_manifest(tmp_path / "shards" / "manifest.json")
    assert manifest["tokens"] == result.tokens == sum(len(a) for a in arrays)
    assert manifest["samples"] == 23 and manifest["kinds"] == {"video": manifest["tokens"]}
    assert manifest["tokens_per_image"] == TPI and manifest["vocab_size"] == 8292

    sentences = read_sentences(tmp_path / "shards")
    assert len(sentences) == len(arrays)
    for number, (sentence, ids) in enumerate(zip(sentences, arrays), start=1):
        assert sentence.tokens.dtype == np.uint16
        np.testing.assert_array_equal(sentence.tokens, ids)
        assert sentence.n_images == len(ids) // TPI
        assert sentence.kind == "video"
        assert sentence.source == [f"dataset.jsonl:{number}"]
        assert sentence.key == f"{number:09d}"

    exported = tmp_path / "exported.jsonl"
    assert export_jsonl(tmp_path / "shards", exported, progress=False) == (23, manifest["tokens"])
    assert exported.read_bytes() == source.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_other_fields_are_kept_as_meta(tmp_path):
    ids = np.arange(2 * TPI)
    source = write_jsonl(tmp_path / "d.jsonl", [original_line(ids, caption="a cat", shot=3, kind="paired")])
    import_jsonl(source, tmp_path / "out", tokens_per_image=TPI, progress=False)
    (sentence,) = read_sentences(tmp_path / "out")
    assert sentence.kind == "imported"
    # 'kind' is a field of our own samples: the line's value is kept under another name.
    assert sentence.meta == {"caption": "a cat", "shot": 3, "jsonl_kind": "paired"}


def test_export_reads_a_glob_and_a_manifest_path(tmp_path):
    arrays = random_sentences(7, seed=1)
    source = write_jsonl(tmp_path / "d.jsonl", [original_line(a) for a in arrays])
    import_jsonl(source, tmp_path / "s", tokens_per_image=TPI, samples_per_shard=3, progress=False)
    for spec in (str(tmp_path / "s" / "shard-*.tar"), tmp_path / "s" / "manifest.json"):
        out = tmp_path / "out.jsonl"
        export_jsonl(spec, out, progress=False)
        assert out.read_bytes() == source.read_bytes()


GOOD = original_line(np.arange(TPI))
BAD_LINES = {
    "not JSON": ('{"tokens": "AAAA"', "not valid JSON"),
    "not an object": ("[1, 2]\n", "expected a JSON object"),
    "no tokens": ('{"codes": "AAAAAA=="}\n', "no field 'tokens'"),
    "tokens not a string": ('{"tokens": [1, 2, 3]}\n', "field 'tokens' is list"),
    "not base64": ('{"tokens": "AA*A"}\n', "not valid base64"),
    "bad padding": ('{"tokens": "AAAAA"}\n', "not valid base64"),
    "not whole int32s": (
        json.dumps({"tokens": base64.b64encode(b"\x01\x00\x00\x00\x02\x00").decode()}) + "\n",
        "6 bytes, not a whole number of int32",
    ),
    "empty": ('{"tokens": ""}\n', "holds no tokens"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_malformed_line_is_an_error_naming_file_and_line(tmp_path, case):
    bad, message = BAD_LINES[case]
    source = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, bad if bad.endswith("\n") else bad + "\n", GOOD])
    with pytest.raises(BadLineError, match=message) as info:
        import_jsonl(source, tmp_path / "out", tokens_per_image=TPI, progress=False)
    assert str(info.value).startswith(f"{source}:3: ")
    assert info.value.line == 3
    assert not (tmp_path / "out" / "manifest.json").exists()  # no manifest: the shard set is not complete


@pytest.mark.parametrize(
    "bad_id, message",
    [
        (8292, "field 'tokens' holds id 8292 ≥ vocab_size 8292"),
        (70000, "field 'tokens' holds id 70000, which does not fit uint16"),
        (-1, "field 'tokens' holds id -1 < 0"),
    ],
)
def test_an_id_out_of_range_names_file_line_field_and_id(tmp_path, bad_id, message):
    ids = np.arange(TPI)
    ids[7] = bad_id
    source = write_jsonl(tmp_path / "d.jsonl", [GOOD, original_line(ids)])
    with pytest.raises(BadLineError) as info:
        import_jsonl(source, tmp_path / "out", tokens_per_image=TPI, progress=False, skip_bad=True)
    assert str(info.value) == f"{source}:2: {message}"


def test_a_partial_image_is_an_error_naming_the_line(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, original_line(np.arange(TPI + 3))])
    with pytest.raises(BadLineError, match=r"d\.jsonl:3: .*19 ids, not a whole number of images of 16"):
        import_jsonl(source, tmp_path / "out", tokens_per_image=TPI, progress=False)


def test_skip_bad_counts_and_reports_every_skipped_line(tmp_path):
    arrays = random_sentences(4, seed=2)
    lines = [
        original_line(arrays[0]),
        "oops\n",
        original_line(arrays[1]),
        "\n",
        '{"x": 1}\n',
        original_line(arrays[2]),
        original_line(arrays[3]),
    ]
    source = write_jsonl(tmp_path / "d.jsonl", lines)
    result = import_jsonl(source, tmp_path / "out", tokens_per_image=TPI, skip_bad=True, progress=False)
    assert result.sentences == 4 and result.lines == 7 and result.blank_lines == 1
    assert [n for n, _ in result.skipped] == [2, 5]
    assert "skipped 2 bad lines: line 2 (not valid JSON" in result.summary()
    config = read_manifest(tmp_path / "out" / "manifest.json")["config"]
    assert [s["line"] for s in config["skipped"]] == [2, 5] and config["blank_lines"] == 1
    assert [s.source for s in read_sentences(tmp_path / "out")] == [
        ["d.jsonl:1"],
        ["d.jsonl:3"],
        ["d.jsonl:6"],
        ["d.jsonl:7"],
    ]


def test_import_streams_the_file(tmp_path):
    """Peak Python memory (numpy included) stays a small fraction of the file: it is never read whole."""
    rng = np.random.default_rng(3)
    source = tmp_path / "big.jsonl"
    with open(source, "w") as f:
        for _ in range(1500):
            f.write(original_line(rng.integers(0, 8192, 1024)))
    size = source.stat().st_size
    assert size > 8_000_000
    tracemalloc.start()
    try:
        result = import_jsonl(source, tmp_path / "out", tokens_per_image=256, samples_per_shard=100, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.tokens == 1500 * 1024
    assert peak < size / 10, (peak, size)


def test_command_line_round_trip(tmp_path, capsys):
    arrays = random_sentences(5, seed=4)
    source = write_jsonl(tmp_path / "d.jsonl", [original_line(a) for a in arrays])
    assert (
        main(
            [
                "import",
                str(source),
                str(tmp_path / "s"),
                "--tokens-per-image",
                str(TPI),
                "--kind",
                "paired",
                "--samples-per-shard",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "5 sentences" in capsys.readouterr().out
    assert read_manifest(tmp_path / "s" / "manifest.json")["kinds"].keys() == {"paired"}
    assert main(["export", str(tmp_path / "s"), str(tmp_path / "back.jsonl"), "--no-progress"]) == 0
    assert (tmp_path / "back.jsonl").read_bytes() == source.read_bytes()


def test_command_line_error_is_one_line_naming_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, "nope\n"])
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_pipelines.jsonl",
            "import",
            str(bad),
            str(tmp_path / "b"),
            "--tokens-per-image",
            str(TPI),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert f"error: {bad}:2: not valid JSON" in failed.stderr
    assert "Traceback" not in failed.stderr

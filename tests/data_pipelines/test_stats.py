"""`python -m data_pipelines.stats`: per-manifest, per-source and total counts of shard sets written by
ShardWriter, checked against what was written."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from data_pipelines.stats import collect, find_manifests, main
from lvm.data.shards import ShardWriter, VisualSentence

TPI = 4  # tokens per image


def write_set(folder: Path, counts: dict[str, tuple[int, int]], name: str | None = None) -> Path:
    """A shard set with counts[kind] = (sentences, images per sentence); config.name = `name`."""
    rng = np.random.default_rng(len(counts))
    with ShardWriter(
        folder, max_samples_per_shard=3, vocab_size=64, tokens_per_image=TPI, config={"name": name} if name else None
    ) as writer:
        for kind, (n, images) in counts.items():
            for _ in range(n):
                tokens = rng.integers(0, 64, images * TPI).astype(np.uint16)
                writer.write(VisualSentence(tokens=tokens, kind=kind, source=[f"{kind}.src"], n_images=images))
    return folder / "manifest.json"


@pytest.fixture
def shard_sets(tmp_path) -> Path:
    """train/video (5 × 4 images), train/mix (2 paired × 8, 3 sequence × 2, config name "mixture",
    with skips and filter drops as data_pipelines.build records them), other/video (1 × 4)."""
    write_set(tmp_path / "train" / "video", {"video": (5, 4)})
    mix = write_set(tmp_path / "train" / "mix", {"paired": (2, 8), "sequence": (3, 2)}, name="mixture")
    manifest = json.loads(mix.read_text())
    manifest["skipped"] = [
        {"path": "a.png", "reason": "truncated"},
        {"path": "b.mp4", "reason": "stride 8"},
        {"path": "b.mp4", "reason": "stride 16"},
    ]
    manifest["filtered"] = {"sentences_dropped": {"min_side": 4, "duplicate": 2}, "files_rejected": {"min_side": 1}}
    mix.write_text(json.dumps(manifest))
    write_set(tmp_path / "other" / "video", {"video": (1, 4)})
    return tmp_path


def test_counts_per_manifest_per_source_and_in_total(shard_sets):
    collected = collect([shard_sets / "train", shard_sets / "other" / "video" / "manifest.json"])
    by_path = {Path(m["path"]).parent.name + "/" + Path(m["path"]).parents[1].name: m for m in collected["manifests"]}
    video, mix, other = by_path["video/train"], by_path["mix/train"], by_path["video/other"]
    assert (video["samples"], video["tokens"], video["kinds"]) == (5, 5 * 4 * TPI, {"video": 80})
    assert (mix["samples"], mix["tokens"]) == (5, 2 * 8 * TPI + 3 * 2 * TPI)
    assert mix["kinds"] == {"paired": 64, "sequence": 24}
    assert (mix["source"], mix["skipped"], mix["filtered"]) == ("mixture", 2, 6)  # distinct skipped files
    assert (video["source"], video["skipped"], video["filtered"]) == ("video", None, None)  # not recorded
    assert collected["sources"] == {
        "video": {"samples": 6, "tokens": 96, "kinds": {"video": 96}, "skipped": None, "filtered": None},
        "mixture": {"samples": 5, "tokens": 88, "kinds": {"paired": 64, "sequence": 24}, "skipped": 2, "filtered": 6},
    }
    assert collected["total"] == {
        "manifests": 3,
        "samples": 11,
        "tokens": 184,
        "kinds": {"video": 96, "paired": 64, "sequence": 24},
        "skipped": 2,
        "filtered": 6,
    }
    assert other["tokens"] == 16
    # A manifest named twice (itself and through its folder) counts once.
    assert (
        collect([shard_sets / "train" / "video", shard_sets / "train" / "video" / "manifest.json"])["total"]["samples"]
        == 5
    )


def test_the_printed_tables_show_those_numbers(shard_sets):
    console = Console(record=True, width=250)
    assert main([str(shard_sets)], console=console) == 0
    text = console.export_text()
    total = next(line for line in text.splitlines() if "total" in line)
    cells = [cell.strip() for cell in total.split("│")[1:-1]]
    assert cells[2:] == ["11", "184", "64", "24", "96", "2", "6"]  # samples, tokens, kinds sorted, skipped, filtered
    assert "train/mix " in text and "other/video " in text  # folders, relative to what they share
    rows = {
        cells[1].strip(): [c.strip() for c in cells[2:-1]]
        for cells in (line.split("│") for line in text.splitlines())
        if len(cells) == 6
    }
    assert rows["mixture"] == ["5", "88", "47.8%"] and rows["video"] == ["6", "96", "52.2%"]


def test_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no manifest.json"):
        find_manifests(tmp_path / "empty")


def test_a_missing_path_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")], console=Console(record=True))
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: not a manifest file or a folder\n"


def test_runs_as_a_module(shard_sets, monkeypatch, capsys):
    # In process (runpy), since a fresh interpreter spends seconds importing torch through webdataset.
    monkeypatch.setattr(sys, "argv", ["stats", str(shard_sets / "train" / "video")])
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delitem(sys.modules, "data_pipelines.stats", raising=False)  # runpy runs it afresh
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("data_pipelines.stats", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "tokens per source" in out and "100.0%" in out

"""`python -m data_pipelines.stats`: what a set of shard folders holds, as rich tables.

    python -m data_pipelines.stats /data/shards/video /data/shards/paired/manifest.json /data/shards/train

Each argument is a manifest.json, a folder holding one, or a folder whose sub-folders hold them (all
found below it are read, sorted). Printed: per manifest and in total, samples, tokens and tokens per
kind, skipped files and filtered sentences where the manifest records them (`data_pipelines.build`
and `lvm.tokenize` do); then tokens per source with their share, a source being the manifest's
`config.name` when it has one, else its folder's name. That share is the mixture a training run
over these shard sets sees before `data` weights are applied.

Plain argparse rather than Hydra: this tool only reads, takes nothing but paths, and would gain
from Hydra only a run folder per call.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lvm.core.errors import report_user_errors
from lvm.data.manifest import MANIFEST_NAME, read_manifest


def find_manifests(spec: str | Path) -> list[Path]:
    """The manifest.json files an argument names (see the module docstring)."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return [path / MANIFEST_NAME]
        found = sorted(path.rglob(MANIFEST_NAME))
        if found:
            return found
        raise FileNotFoundError(f"{path}: no {MANIFEST_NAME} in this folder or below it")
    raise FileNotFoundError(f"{path}: not a manifest file or a folder")


def source_name(manifest: dict[str, Any], path: Path) -> str:
    """The manifest's `config.name` when it is a string, else the name of the folder holding it."""
    config = manifest.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) and name else path.resolve().parent.name


def manifest_stats(path: str | Path) -> dict[str, Any]:
    """{"path", "source", "samples", "tokens", "kinds" {kind: tokens}, "skipped" (distinct files, or
    None when the manifest does not record skips), "filtered" (dropped sentences, or None)}."""
    path = Path(path)
    manifest = read_manifest(path)
    skipped = manifest.get("skipped")
    filtered = manifest.get("filtered")
    return {
        "path": str(path),
        "source": source_name(manifest, path),
        "samples": manifest["samples"],
        "tokens": manifest["tokens"],
        "kinds": dict(manifest["kinds"]),
        "skipped": len({entry["path"] for entry in skipped}) if isinstance(skipped, list) else None,
        "filtered": (sum(filtered.get("sentences_dropped", {}).values()) if isinstance(filtered, dict) else None),
    }


def _add(into: dict[str, Any], stats: dict[str, Any]) -> None:
    into["samples"] += stats["samples"]
    into["tokens"] += stats["tokens"]
    for kind, tokens in stats["kinds"].items():
        into["kinds"][kind] = into["kinds"].get(kind, 0) + tokens
    for field in ("skipped", "filtered"):
        if stats[field] is not None:
            into[field] = (into[field] or 0) + stats[field]


def _empty(**extra: Any) -> dict[str, Any]:
    return {**extra, "samples": 0, "tokens": 0, "kinds": {}, "skipped": None, "filtered": None}


def collect(specs: Sequence[str | Path]) -> dict[str, Any]:
    """{"manifests": [manifest_stats …], "sources": {name: totals}, "total": totals}; a manifest named
    twice (directly and through its folder) is counted once."""
    paths = list(dict.fromkeys(p.resolve() for spec in specs for p in find_manifests(spec)))
    manifests = [manifest_stats(path) for path in paths]
    sources: dict[str, dict[str, Any]] = {}
    total = _empty(manifests=len(manifests))
    for stats in manifests:
        _add(sources.setdefault(stats["source"], _empty()), stats)
        _add(total, stats)
    return {"manifests": manifests, "sources": sources, "total": total}


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def manifest_labels(paths: Sequence[str]) -> list[str]:
    """Short names for the table: each manifest's folder relative to the parent of the folder they all
    share (`train/video`, `train/paired`), or the folder itself when there is one manifest."""
    folders = [os.path.dirname(path) for path in paths]
    if len(folders) < 2:
        return folders
    base = os.path.dirname(os.path.commonpath(folders))
    return [os.path.relpath(folder, base) for folder in folders]


def stats_tables(collected: dict[str, Any]) -> list[Table]:
    """The per-manifest table (with a total row) and the per-source table."""
    total = collected["total"]
    labels = manifest_labels([stats["path"] for stats in collected["manifests"]])
    kinds = sorted(total["kinds"])
    per_manifest = Table(title="shard sets", show_footer=len(collected["manifests"]) > 1)
    per_manifest.add_column("shard set", footer="total")
    per_manifest.add_column("source")
    for name, key in (("samples", "samples"), ("tokens", "tokens")):
        per_manifest.add_column(name, justify="right", footer=_count(total[key]))
    for kind in kinds:
        per_manifest.add_column(f"{kind} tokens", justify="right", footer=_count(total["kinds"][kind]))
    per_manifest.add_column("skipped files", justify="right", footer=_count(total["skipped"]))
    per_manifest.add_column("filtered sentences", justify="right", footer=_count(total["filtered"]))
    for label, stats in zip(labels, collected["manifests"]):
        per_manifest.add_row(
            label,
            stats["source"],
            _count(stats["samples"]),
            _count(stats["tokens"]),
            *(_count(stats["kinds"].get(kind, 0)) for kind in kinds),
            _count(stats["skipped"]),
            _count(stats["filtered"]),
        )

    per_source = Table(title="tokens per source")
    for name in ("source", "samples", "tokens", "share of tokens"):
        per_source.add_column(name, justify="left" if name == "source" else "right")
    for name, stats in sorted(collected["sources"].items()):
        share = stats["tokens"] / total["tokens"] if total["tokens"] else 0.0
        per_source.add_row(name, _count(stats["samples"]), _count(stats["tokens"]), f"{share:.1%}")
    return [per_manifest, per_source]


@report_user_errors
def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Print the tables for the manifests named in `argv`; returns 0 (bad input: one `error:` line, exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m data_pipelines.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="+", help="manifest.json files, or folders holding them (searched below)")
    args = parser.parse_args(argv)
    console = console or Console()
    for table in stats_tables(collect(args.manifests)):
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A shard set's `manifest.json` (what it holds: shards, samples, tokens per kind, skipped files) and the
`plan.json` + `progress/` of a resumable writer; finding the shards a path, folder, glob or manifest names."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import webdataset as wds

from lvm.core.atomic_files import write_json_atomic

MANIFEST_NAME = "manifest.json"


PROGRESS_DIR = "progress"  # per-shard summaries of a resumable writer


PLAN_NAME = "plan.json"  # what a resumable writer's shards were made from (check_plan)


MANIFEST_VERSION = 1


def manifest_dict(
    shards: list[dict[str, Any]],
    kinds: dict[str, int],
    tokens_per_image: int | None,
    vocab_size: int,
    config: dict | None,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest.json object of a shard set (`shards`: {"path", "samples", "tokens"} each)."""
    return {
        "version": MANIFEST_VERSION,
        "shards": [{k: shard[k] for k in ("path", "samples", "tokens")} for shard in shards],
        "samples": sum(s["samples"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "kinds": kinds,
        "tokens_per_image": tokens_per_image,
        "vocab_size": vocab_size,
        "config": config,
        **extra,
    }


def check_plan(out_dir: str | os.PathLike, plan: dict[str, Any]) -> None:
    """Write `<out_dir>/plan.json`, or check a rerun's `plan` against the one there. A resumable writer
    keeps its finished shards only when what decides their content (inputs, settings, tokenizer) is
    unchanged; any difference is an error naming each changed field, old and new."""
    path = Path(out_dir) / PLAN_NAME
    if not path.exists():
        write_json_atomic(path, plan)
        return
    old = json.loads(path.read_text())
    changed = [k for k in sorted(plan.keys() | old.keys()) if old.get(k) != plan.get(k)]
    if changed:
        described = "; ".join(f"{k}: was {old.get(k)!r}, now {plan.get(k)!r}" for k in changed)
        raise ValueError(
            f"{path}: this output folder was started with another {', '.join(changed)} "
            f"({described}); use a new output_dir or delete this one to start again"
        )


def write_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write `out_dir`/manifest.json atomically; returns its path."""
    path = Path(out_dir) / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path


# -- reading ----------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a manifest; shard paths come back absolute and are checked to exist."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: manifest does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(manifest).__name__}")

    def need(obj: dict, name: str, kind: type | tuple[type, ...], where: str = "") -> Any:
        if name not in obj:
            raise ValueError(f"{path}: missing field '{where}{name}'")
        value = obj[name]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ValueError(f"{path}: field '{where}{name}' is {value!r}, expected {getattr(kind, '__name__', kind)}")
        return value

    version = need(manifest, "version", int)
    if version != MANIFEST_VERSION:
        raise ValueError(f"{path}: field 'version' is {version}, this reader knows version {MANIFEST_VERSION}")
    shards = need(manifest, "shards", list)
    for name, kind in (("samples", int), ("tokens", int), ("kinds", dict), ("vocab_size", int)):
        need(manifest, name, kind)
    need(manifest, "tokens_per_image", (int, type(None)))  # None only for an empty shard set
    base = path.parent.resolve()
    out_shards = []
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            raise ValueError(f"{path}: field 'shards[{i}]' is {shard!r}, expected an object")
        rel = need(shard, "path", str, f"shards[{i}].")
        need(shard, "samples", int, f"shards[{i}].")
        need(shard, "tokens", int, f"shards[{i}].")
        full = base / rel
        if not full.is_file():
            raise FileNotFoundError(f"{path}: field 'shards[{i}].path' names {full}, which does not exist")
        out_shards.append({**shard, "path": str(full)})
    return {**manifest, "shards": out_shards}


def expand_sources(spec: str | os.PathLike) -> list[str]:
    """Shard paths (sorted) of a manifest.json, a directory holding one, a glob, or brace notation."""
    spec = os.path.expanduser(str(spec))
    if os.path.isdir(spec):
        manifest = os.path.join(spec, MANIFEST_NAME)
        if not os.path.isfile(manifest):
            raise FileNotFoundError(f"{spec}: directory has no {MANIFEST_NAME} (unfinished or not a shard set)")
        paths = [s["path"] for s in read_manifest(manifest)["shards"]]
    elif spec.endswith(".json"):
        paths = [s["path"] for s in read_manifest(spec)["shards"]]
    else:
        paths = []
        # webdataset's own expansion: brace ranges and '::'-joined lists, then globs per pattern.
        for pattern in wds.shardlists.expand_urls(spec):
            matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern] if os.path.exists(pattern) else []
            paths.extend(matches)
    if not paths:
        raise FileNotFoundError(f"{spec}: no shards found")
    return sorted(set(paths))


def manifest_of(spec: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest behind a source spec, or None for globs and brace lists."""
    spec = os.path.expanduser(str(spec))
    if os.path.isdir(spec):
        spec = os.path.join(spec, MANIFEST_NAME)
    return read_manifest(spec) if spec.endswith(".json") else None

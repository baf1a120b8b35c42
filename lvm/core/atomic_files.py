"""Writing files so that a crash never leaves half of one: a temporary name, fsync where it matters, then a
rename (`os.replace`, atomic on POSIX); folders are swapped in two renames with the old one kept aside
until the new one is in place."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def atomic_write(target: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Write `target` via `write(tmp_path)` to a temporary name beside it (per process, so ranks writing the
    same file do not trample each other), then rename it over `target`: all or nothing."""
    target = Path(target)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    """Write `obj` as JSON to `path` through a temporary file, fsync and rename: readers see the old
    file or the new one, never half of one. The temporary name is per process, so ranks writing the
    same file at once do not trample each other."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Rows (dicts; columns in first-seen order) as CSV, through a temporary file and os.replace."""
    path = Path(path)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished checkpoint folder `source` onto `target`, replacing any older one.

    Directories cannot be swapped in one rename, so the old one is first renamed aside: at every
    instant either `target` or `<target>.old` holds a complete checkpoint (`resolve_directory`
    picks the latter up after a kill between the two renames).
    """
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    if old.exists():
        shutil.rmtree(old)


def resolve_directory(target: Path) -> Path:
    """`target`, or the `<target>.old` that a kill between `replace_directory`'s renames left behind."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.exists():
        os.replace(old, target)
    return target

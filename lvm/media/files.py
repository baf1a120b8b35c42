"""Finding input files: the extensions read, natural sort order, folders, globs and `.txt` file lists."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def natural_sort_key(text: str) -> list:
    """Digits compare as numbers, so frame_2.png sorts before frame_10.png (zero-padded or not)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def list_files(root: str | os.PathLike, extensions: Iterable[str], recursive: bool = True) -> list[str]:
    """Paths of files under `root` whose suffix is one of `extensions` (case-insensitive), sorted
    naturally by path relative to `root`. Hidden files (``.name``, e.g. macOS ``._x.png``) are left
    out; a missing `root` is an error."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a directory")
    wanted = tuple(ext.lower() if ext.startswith(".") else "." + ext.lower() for ext in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(wanted):
                found.append(os.path.join(dirpath, name))
        if not recursive:
            break
    return sorted(found, key=lambda p: natural_sort_key(os.path.relpath(p, root)))


def split_path_list(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """A list of paths (or globs) given either as a sequence or as one string with the original's
    ``::`` separator ("rgb::depth::edges"), the form a command line passes most easily."""
    if isinstance(paths, (str, os.PathLike)):
        return [part for part in str(paths).split("::") if part]
    return [str(path) for path in paths]


def read_file_list(path: str | os.PathLike) -> list[str]:
    """The paths a text file lists, one per line: relative ones are relative to the list's folder;
    blank lines and lines starting with ``#`` are ignored."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        lines = [line.strip() for line in f]
    return [os.path.join(base, line) for line in lines if line and not line.startswith("#")]


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], extensions: Iterable[str]) -> list[str]:
    """The files `inputs` names, in the order given: a folder gives its files with `extensions`
    (recursive, natural order), a glob its matches with those extensions (sorted), a ``.txt`` file the
    paths it lists (one per line, relative to the list's folder, ``#`` lines ignored), anything else
    itself — a missing file stays in the list, so the builder reading it records it as skipped."""
    wanted = tuple(ext.lower() for ext in extensions)
    files: list[str] = []
    for entry in split_path_list(inputs):
        entry = os.path.expanduser(entry)
        if os.path.isdir(entry):
            files += list_files(entry, wanted)
        elif entry.endswith(".txt") and os.path.isfile(entry):
            files += read_file_list(entry)
        elif glob.has_magic(entry):
            files += sorted(p for p in glob.glob(entry, recursive=True) if p.lower().endswith(wanted))
        else:
            files.append(entry)
    return files

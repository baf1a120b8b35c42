"""JSON files read with errors that name the file (and line): one object per file (configs, run indexes), or
one object per line (JSON Lines: prompts, evaluation examples, generation results)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path


def iter_json_objects(path: str | os.PathLike) -> Iterator[tuple[int, str, dict | ValueError]]:
    """(line number, "<file>:<line>", the line's JSON object) for each non-blank line. A line that is not
    a JSON object comes as a ValueError naming the file and line instead: raise it, or count it and go on."""
    with open(path) as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                yield number, where, ValueError(f"{where}: not valid JSON ({err})")
                continue
            if not isinstance(record, dict):
                record = ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield number, where, record


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object stored in `path`; ValueError naming the file when it is not valid JSON or not an
    object (a missing file raises FileNotFoundError)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value

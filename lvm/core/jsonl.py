"""JSON Lines files (prompts, evaluation examples, generation results) read one object per line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator


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

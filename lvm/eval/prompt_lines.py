"""Image examples for perplexity, from the original's jsonl (evaluation/vqlm_demo/eval_perplexity.py):
one {"input": [...], "target": [...]} of image paths per line; bad lines named by file, line and field."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lvm.core.json_files import iter_json_objects
from lvm.eval.examples import ImageExample
from lvm.media.images import ImageReadError, load_image
from lvm.media.skips import SkipCounter


class BadPromptError(ValueError):
    """A jsonl line that cannot be scored; the message names the file, the line and the field."""


@dataclass
class PromptLine:
    """One jsonl line: its number (1-based) and the resolved image paths of its two fields."""

    line: int
    inputs: list[Path]
    targets: list[Path]


def _paths_field(record: dict, key: str, base: Path, where: str) -> list[Path]:
    if key not in record:
        raise BadPromptError(f"{where}: no field '{key}' (fields: {sorted(record)})")
    value = record[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadPromptError(f"{where}: field '{key}' must be a list of image paths, got {json.dumps(value)[:200]}")
    if not value:
        raise BadPromptError(f"{where}: field '{key}' is an empty list")
    return [base / v for v in value]


def read_prompt_lines(
    path: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    input_key: str = "input",
    target_key: str = "target",
    skips: SkipCounter | None = None,
) -> list[PromptLine]:
    """The examples of a jsonl file; blank lines are ignored. A malformed line raises BadPromptError,
    or with `skips` is recorded there (as "<file>:<line>") and left out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts: {path} is not a file")
    base = Path(base_dir) if base_dir is not None else path.parent
    prompts = []
    for number, where, record in iter_json_objects(path):
        if skips is not None:
            skips.saw()
        try:
            if isinstance(record, ValueError):
                raise BadPromptError(str(record))
            prompts.append(
                PromptLine(
                    number, _paths_field(record, input_key, base, where), _paths_field(record, target_key, base, where)
                )
            )
        except BadPromptError as err:
            if skips is None:
                raise
            skips.skip(where, str(err).removeprefix(f"{where}: "))
    return prompts


def _load_field(paths: Sequence[Path], key: str, size: int, where: str) -> torch.Tensor:
    images = []
    for i, image_path in enumerate(paths):
        try:
            images.append(load_image(image_path, size=size))
        except (ImageReadError, OSError) as err:
            reason = f"{image_path}: no such file" if isinstance(err, FileNotFoundError) else str(err)
            raise BadPromptError(f"{where}: field '{key}'[{i}]: {reason}") from err
    return torch.stack(images)


def load_prompt_images(
    prompts: Iterable[PromptLine],
    jsonl: str | os.PathLike,
    size: int,
    input_key: str = "input",
    target_key: str = "target",
    skips: SkipCounter | None = None,
) -> Iterator[ImageExample]:
    """The images of each line at `size`×`size` (as the original prepares VQGAN input). An unreadable
    image raises BadPromptError naming file, line and field, or with `skips` is recorded and its line
    left out."""
    for prompt in prompts:
        where = f"{jsonl}:{prompt.line}"
        try:
            inputs = _load_field(prompt.inputs, input_key, size, where)
            targets = _load_field(prompt.targets, target_key, size, where)
        except BadPromptError as err:
            if skips is None:
                raise
            skips.skip(where, str(err).removeprefix(f"{where}: "))
            continue
        yield ImageExample(
            id=str(prompt.line),
            where=where,
            inputs=inputs,
            targets=targets,
            meta={"line": prompt.line, "n_input_images": len(inputs), "n_target_images": len(targets)},
        )

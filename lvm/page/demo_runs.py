"""A finished `python -m lvm.demo` run as the page's source: its model, tokenizer and held-out prompts
(`prompts.json`), the newest finished run found by default."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvm.core.json_files import read_json_object


class DemoRunError(ValueError):
    """A demo run the page cannot be served from: none finished, a missing file, a malformed prompts.json."""


@dataclass(frozen=True)
class AnalogyPrompt:
    """One held-out analogy of a demo run: its task, (x, y) example file pairs and the query x file."""

    task: str
    pairs: tuple[tuple[Path, Path], ...]
    query: Path


@dataclass(frozen=True)
class DemoPrompts:
    """A demo run's held-out prompts (its prompts.json): analogies, and next-frame prompts as frame files
    in order."""

    analogy: tuple[AnalogyPrompt, ...] = ()
    next_frame: tuple[tuple[Path, ...], ...] = ()


@dataclass(frozen=True)
class PageSources:
    """What the page serves: the LVM and the VQGAN, and the demo run (if any) whose prompts are its examples."""

    model_path: Path
    tokenizer_path: Path
    run_dir: Path | None = None
    prompts: DemoPrompts = DemoPrompts()


DEMO_MODEL = Path("lvm/checkpoints/last.ckpt")  # the files of a demo run folder (lvm.demo writes them)


DEMO_TOKENIZER = Path("tokenizer")


DEMO_PROMPTS = Path("prompts.json")


DEMO_SUMMARY = Path("summary.json")  # written last: marks a finished run


def _expect(source: Path, value: Any, kind: type, where: str) -> Any:
    """`value` if it is a `kind` (a non-empty one for str); DemoRunError naming `source` and the field otherwise."""
    if not isinstance(value, kind) or (kind is str and not value):
        raise DemoRunError(
            f"{source}: field '{where}' should be a {'non-empty ' * (kind is str)}{kind.__name__}"
            f", got {json.dumps(value)[:60]}"
        )
    return value


def _field(source: Path, record: dict, key: str, kind: type, where: str) -> Any:
    """`record[key]`, checked to be there and to be a `kind` (`where` names it in errors)."""
    if key not in record:
        raise DemoRunError(f"{source}: field '{where}' is missing")
    return _expect(source, record[key], kind, where)


def _prompt_file(source: Path, value: Any, where: str) -> Path:
    """A prompt's image path (relative to the run folder, which holds `source`), checked to exist."""
    path = source.parent / _expect(source, value, str, where)
    if not path.is_file():
        raise DemoRunError(f"{source}: field '{where}' names {path}, which does not exist")
    return path


def read_demo_prompts(run_dir: str | os.PathLike) -> DemoPrompts:
    """The held-out prompts of the demo run at `run_dir` (its prompts.json, version 1), every file checked
    to exist; DemoRunError naming the file and the field when it is missing or malformed."""
    source = Path(run_dir) / DEMO_PROMPTS
    if not source.is_file():
        raise DemoRunError(
            f"{source}: not found (a demo run folder holds prompts.json, written by `python -m lvm.demo`)"
        )
    try:
        data = read_json_object(source)
    except ValueError as err:
        raise DemoRunError(str(err)) from err
    if data.get("version") != 1:
        raise DemoRunError(f"{source}: field 'version' should be 1, got {json.dumps(data.get('version'))}")
    analogies = []
    for i, record in enumerate(_field(source, data, "analogy", list, "analogy")):
        where = f"analogy[{i}]"
        _expect(source, record, dict, where)
        pairs = []
        for j, pair in enumerate(_field(source, record, "examples", list, f"{where}.examples")):
            if not isinstance(pair, list) or len(pair) != 2:
                raise DemoRunError(
                    f"{source}: field '{where}.examples[{j}]' should be an [x, y] pair of paths, "
                    f"got {json.dumps(pair)[:60]}"
                )
            pairs.append(tuple(_prompt_file(source, f, f"{where}.examples[{j}][{k}]") for k, f in enumerate(pair)))
        if not pairs:
            raise DemoRunError(f"{source}: field '{where}.examples' is empty (an analogy needs an (x, y) pair)")
        task = _field(source, record, "task", str, f"{where}.task")
        query = _prompt_file(source, _field(source, record, "query", str, f"{where}.query"), f"{where}.query")
        analogies.append(AnalogyPrompt(task, tuple(pairs), query))
    next_frame = []
    for i, record in enumerate(_field(source, data, "next_frame", list, "next_frame")):
        where = f"next_frame[{i}]"
        frames = _field(source, _expect(source, record, dict, where), "frames", list, f"{where}.frames")
        if not frames:
            raise DemoRunError(f"{source}: field '{where}.frames' is empty")
        next_frame.append(tuple(_prompt_file(source, f, f"{where}.frames[{j}]") for j, f in enumerate(frames)))
    return DemoPrompts(tuple(analogies), tuple(next_frame))


def latest_demo_run(runs_dir: str | os.PathLike) -> Path:
    """The demo run under `runs_dir` whose summary.json (written when it finished) is the newest."""
    finished = list(Path(runs_dir).glob(f"*/{DEMO_SUMMARY}"))
    if not finished:
        raise DemoRunError(
            f"no finished demo run in {runs_dir} (none has {DEMO_SUMMARY}): run `python -m lvm.demo` "
            "first or pass model_path=... tokenizer_path=..."
        )
    return max(finished, key=lambda summary: (summary.stat().st_mtime, summary.parent.name)).parent


def resolve_page_sources(
    demo_run: str | os.PathLike | None,
    runs_dir: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    tokenizer_path: str | os.PathLike | None = None,
) -> PageSources:
    """The model, tokenizer and examples the page serves. `demo_run` is "latest" (the newest finished run
    under `runs_dir`), a run folder, or None (no demo run: both paths needed). The run fills whichever of
    `model_path` / `tokenizer_path` is None (<run>/lvm/checkpoints/last.ckpt, <run>/tokenizer) and gives
    its prompts; given paths win. With both paths given, "latest" is not looked for: they name another
    model, which a run must be named explicitly to pair with."""
    given = model_path is not None and tokenizer_path is not None
    if demo_run is None or (demo_run == "latest" and given):
        if not given:
            raise DemoRunError("demo_run=null: pass model_path=... tokenizer_path=... (or demo_run=<run folder>)")
        return PageSources(Path(model_path), Path(tokenizer_path))
    run_dir = latest_demo_run(runs_dir) if demo_run == "latest" else Path(demo_run)
    if not run_dir.is_dir():
        raise DemoRunError(
            f"demo_run={demo_run}: no such folder (expected a run of `python -m lvm.demo`, "
            f"e.g. {Path(runs_dir) / '<time>'})"
        )
    filled = []
    for path, default in ((model_path, DEMO_MODEL), (tokenizer_path, DEMO_TOKENIZER)):
        if path is None and not (run_dir / default).exists():
            raise DemoRunError(
                f"{run_dir / default}: not found in demo run {run_dir} (unfinished?); pass "
                f"{'model_path' if default == DEMO_MODEL else 'tokenizer_path'}=... or another run"
            )
        filled.append(Path(path) if path is not None else run_dir / default)
    return PageSources(*filled, run_dir=run_dir, prompts=read_demo_prompts(run_dir))

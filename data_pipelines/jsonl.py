"""The original's pretokenized `dataset.jsonl` ↔ our WebDataset shards (the original's DATASET.md and
tokenize_examples/).

The original stores one visual sentence per line as `{"tokens": "<base64>"}`, the base64 of a
little-endian int32 array of VQ codes. We store uint16 arrays in tar shards with a manifest
(lvm/data/shards.py).

    python -m data_pipelines.jsonl import dataset.jsonl shards/imported [--tokens-per-image 256]
        [--kind imported] [--samples-per-shard 1000] [--vocab-size 8292] [--skip-bad]
    python -m data_pipelines.jsonl export shards/imported/manifest.json dataset.jsonl

Import streams the file line by line (memory holds one shard's worth of sentences, not the file)
and keeps the token count exactly: the manifest's `tokens` equals the sum of the decoded array
lengths. Each sentence gets `kind` from the flag, `source` ["<file name>:<line number>"], the
sample key of its line number, and the line's other JSON fields as `meta` (a field whose name the
shard format reserves — kind, source, n_images, tokens_per_image — is kept as `jsonl_<name>`).
Malformed lines (not JSON, no 'tokens', not base64, a byte length that is not whole int32s, no
tokens) stop the import with the file and line, or with `skip_bad` are counted, reported and listed
in the manifest. Ids outside [0, vocab_size) and sentences that are not whole images always stop
it: those mean a wrong --vocab-size / --tokens-per-image, and skipping would drop a whole source.
Blank lines are skipped (as EasyLM's reader does) and counted.

Export writes one `{"tokens": ...}` line per sentence, shards in sorted order and samples in
stored order, so an imported file exports back byte for byte (other fields are not written:
the original's reader only reads 'tokens').

The command line uses argparse, not Hydra: this is a file converter with two positional paths and
a few flags, no config groups to compose, and it must run where no conf/ tree is at hand.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from lvm.core.errors import report_user_errors
from lvm.data.manifest import MANIFEST_NAME, expand_sources, manifest_dict, manifest_of, write_manifest
from lvm.data.shards import DEFAULT_VOCAB_SIZE, VisualSentence, iter_shard, write_shard_file

# The fields a sample's json owns in our shards; a jsonl field of the same name is renamed jsonl_<name>.
_RESERVED = ("kind", "source", "n_images", "tokens_per_image")
_UINT16_LIMIT = 1 << 16


class BadLineError(ValueError):
    """A jsonl line that cannot be imported; the message is "<file>:<line>: <reason>"."""

    def __init__(self, path: str | os.PathLike, line: int, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{self.path}:{line}: {reason}")


# --- one line ------------------------------------------------------------------------------------------


def encode_tokens(tokens: np.ndarray) -> str:
    """The original's 'tokens' field: base64 of the ids as little-endian int32 bytes."""
    return base64.b64encode(np.asarray(tokens).astype("<i4", copy=False).tobytes()).decode("ascii")


def encode_line(tokens: np.ndarray) -> str:
    """One jsonl line (with its newline) as the original's tokenizer scripts write it."""
    return json.dumps({"tokens": encode_tokens(tokens)}) + "\n"


def decode_line(line: bytes | str, path: str | os.PathLike, line_number: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The int32 ids (n,) and the other fields of one jsonl line; `BadLineError` names file and line.

    Checks the format only (JSON object, 'tokens' a non-empty base64 string of whole int32s); the ids'
    range is the caller's to check, since it depends on the vocabulary.
    """
    try:
        record = json.loads(line)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise BadLineError(path, line_number, f"not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise BadLineError(path, line_number, f"expected a JSON object, got {type(record).__name__}")
    if "tokens" not in record:
        raise BadLineError(path, line_number, f"no field 'tokens' (fields: {sorted(record)})")
    text = record.pop("tokens")
    if not isinstance(text, str):
        raise BadLineError(path, line_number, f"field 'tokens' is {type(text).__name__}, expected a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)  # validate: stray characters are errors, not ignored
    except (binascii.Error, ValueError) as e:
        raise BadLineError(path, line_number, f"field 'tokens' is not valid base64 ({e})") from None
    if len(raw) % 4:
        raise BadLineError(
            path, line_number, f"field 'tokens' decodes to {len(raw)} bytes, not a whole number of int32 ids"
        )
    if not raw:
        raise BadLineError(path, line_number, "field 'tokens' holds no tokens")
    return np.frombuffer(raw, dtype="<i4"), record


def check_ids(tokens: np.ndarray, vocab_size: int, path: str | os.PathLike, line_number: int) -> None:
    """Raise naming file, line, field and id unless every id is in [0, vocab_size) (so fits uint16)."""
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0:
        raise BadLineError(path, line_number, f"field 'tokens' holds id {low} < 0")
    if high >= _UINT16_LIMIT:
        raise BadLineError(path, line_number, f"field 'tokens' holds id {high}, which does not fit uint16")
    if high >= vocab_size:
        raise BadLineError(path, line_number, f"field 'tokens' holds id {high} ≥ vocab_size {vocab_size}")


# --- import --------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did: counts, the manifest it wrote, and each skipped line with its reason."""

    manifest: Path
    lines: int = 0
    blank_lines: int = 0
    sentences: int = 0
    tokens: int = 0
    shards: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        head = (
            f"{self.sentences} sentences, {self.tokens} tokens from {self.lines} lines "
            f"into {self.shards} shards ({self.manifest})"
        )
        if self.blank_lines:
            head += f"; {self.blank_lines} blank lines"
        if self.skipped:
            head += f"; skipped {len(self.skipped)} bad lines: " + ", ".join(
                f"line {n} ({reason})" for n, reason in self.skipped
            )
        return head


class LinesPerSecond(ProgressColumn):
    """Lines done and lines per second since the start (a task field: the import bar counts bytes)."""

    def render(self, task) -> Text:
        lines, elapsed = task.fields.get("lines", 0), task.elapsed or 0.0
        rate = f"{lines / elapsed:,.0f} lines/s" if elapsed > 0 else "– lines/s"
        return Text(f"{lines:,} lines {rate}", style="cyan")


def _progress(verb: str, console: Console | None, enabled: bool, by_bytes: bool) -> Progress:
    size = DownloadColumn() if by_bytes else MofNCompleteColumn()
    return Progress(
        TextColumn(f"[bold]{verb}"),
        BarColumn(),
        size,
        LinesPerSecond(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )


def _meta_of(record: dict[str, Any]) -> dict[str, Any]:
    return {(f"jsonl_{k}" if k in _RESERVED else k): v for k, v in record.items()}


def iter_jsonl_sentences(
    path: str | os.PathLike,
    tokens_per_image: int = 256,
    kind: str = "imported",
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    skip_bad: bool = False,
    result: ImportResult | None = None,
    on_line: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, VisualSentence]]:
    """(line number, sentence) of each line of a jsonl file, read one line at a time.

    Bad lines raise `BadLineError`, or with `skip_bad` are recorded in `result.skipped` (format errors
    only; ids out of range and partial images always raise). `on_line(n_bytes)` is called per line.
    """
    if tokens_per_image < 1:
        raise ValueError(f"tokens_per_image must be ≥ 1, got {tokens_per_image}")
    if not 0 < vocab_size <= _UINT16_LIMIT:
        raise ValueError(f"vocab_size {vocab_size} does not fit uint16 tokens")
    result = result if result is not None else ImportResult(manifest=Path())
    name = os.path.basename(os.fspath(path))
    # Binary mode: the JSON parser takes bytes, and a line's byte count drives the progress bar.
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            result.lines += 1
            if on_line is not None:
                on_line(len(line))
            if not line.strip():
                result.blank_lines += 1
                continue
            try:
                ids, record = decode_line(line, path, number)
            except BadLineError as e:
                if not skip_bad:
                    raise
                result.skipped.append((number, e.reason))
                continue
            check_ids(ids, vocab_size, path, number)
            if len(ids) % tokens_per_image:
                raise BadLineError(
                    path,
                    number,
                    f"field 'tokens' holds {len(ids)} ids, not a whole number of images of "
                    f"{tokens_per_image} tokens (--tokens-per-image)",
                )
            sentence = VisualSentence(
                tokens=ids.astype(np.uint16),
                kind=kind,
                source=[f"{name}:{number}"],
                n_images=len(ids) // tokens_per_image,
                meta=_meta_of(record),
            )
            yield number, sentence


def import_jsonl(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    tokens_per_image: int = 256,
    kind: str = "imported",
    samples_per_shard: int = 1000,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    skip_bad: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> ImportResult:
    """Convert the original's jsonl into `out_dir`/shard-*.tar + manifest.json; returns the counts.

    The manifest is written last and only on success, so `out_dir` holds a manifest only when the
    whole file was imported. Sample keys are line numbers, so a sample leads back to its line.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be ≥ 1, got {samples_per_shard}")
    path, out_dir = Path(path), Path(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out_dir.mkdir(parents=True, exist_ok=True)
    # A manifest from an earlier run would describe shards this run is about to overwrite.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    result = ImportResult(manifest=out_dir / MANIFEST_NAME)
    shards: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}
    pending: list[VisualSentence] = []
    keys: list[str] = []

    def flush() -> None:
        entry = write_shard_file(out_dir / f"shard-{len(shards):06d}.tar", pending, keys, vocab_size, tokens_per_image)
        shards.append(entry)
        for name, count in entry["kinds"].items():
            kinds[name] = kinds.get(name, 0) + count
        pending.clear()
        keys.clear()

    bar = _progress("import", console, progress, by_bytes=True)
    with bar:
        task = bar.add_task("import", total=path.stat().st_size, lines=0)

        def on_line(n_bytes: int) -> None:
            bar.update(task, advance=n_bytes, lines=result.lines)

        for number, sentence in iter_jsonl_sentences(
            path, tokens_per_image, kind, vocab_size, skip_bad, result, on_line
        ):
            pending.append(sentence)
            keys.append(f"{number:09d}")
            result.sentences += 1
            result.tokens += len(sentence.tokens)
            if len(pending) == samples_per_shard:
                flush()
        if pending:
            flush()
    result.shards = len(shards)
    config = {
        "importer": "data_pipelines.jsonl",
        "file": str(path.resolve()),
        "kind": kind,
        "lines": result.lines,
        "blank_lines": result.blank_lines,
        "skipped": [{"line": n, "reason": reason} for n, reason in result.skipped],
    }
    if not shards:
        raise ValueError(
            f"{path}: no sentences to import ({result.lines} lines, {result.blank_lines} blank, "
            f"{len(result.skipped)} skipped)"
        )
    write_manifest(out_dir, manifest_dict(shards, kinds, tokens_per_image, vocab_size, config))
    return result


# --- export --------------------------------------------------------------------------------------------


def iter_spec_sentences(spec: str | os.PathLike) -> Iterator[VisualSentence]:
    """Sentences of a shard spec (manifest, folder or glob), shards sorted, samples in stored order."""
    manifest = manifest_of(spec)
    # A glob has no manifest: any uint16 id is exportable.
    vocab_size = manifest["vocab_size"] if manifest is not None else _UINT16_LIMIT
    for shard in expand_sources(spec):
        yield from iter_shard(shard, vocab_size)


def write_jsonl(
    sentences: Iterator[VisualSentence], out: IO[str], on_sentence: Callable[[int, int], None] | None = None
) -> tuple[int, int]:
    """Write one original-format line per sentence; returns (lines, tokens); calls `on_sentence(bytes, lines)`."""
    lines = tokens = 0
    for sentence in sentences:
        line = encode_line(sentence.tokens)
        out.write(line)
        lines += 1
        tokens += len(sentence.tokens)
        if on_sentence is not None:
            on_sentence(len(line), lines)
    return lines, tokens


def export_jsonl(
    spec: str | os.PathLike, out_path: str | os.PathLike, progress: bool = True, console: Console | None = None
) -> tuple[int, int]:
    """Write the sentences of shards `spec` as the original's jsonl at `out_path`, atomically
    (`out_path`.tmp, fsync, rename); returns (lines, tokens)."""
    out_path = Path(out_path)
    manifest = manifest_of(spec)
    total = manifest["samples"] if manifest is not None else None
    tmp = out_path.with_name(out_path.name + ".tmp")
    bar = _progress("export", console, progress, by_bytes=False)
    try:
        with bar, open(tmp, "w", encoding="ascii", newline="\n") as f:
            task = bar.add_task("export", total=total, lines=0)  # lines against the manifest's samples
            lines, tokens = write_jsonl(
                iter_spec_sentences(spec), f, lambda n_bytes, n_lines: bar.update(task, advance=1, lines=n_lines)
            )
            f.flush()
            os.fsync(f.fileno())
        if total is not None and lines != total:
            raise ValueError(f"{spec}: manifest lists {total} samples but the shards hold {lines}")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return lines, tokens


# --- command line --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_pipelines.jsonl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import", help="the original's dataset.jsonl → shards + manifest.json")
    imp.add_argument("jsonl", help='a jsonl file of {"tokens": base64 int32} lines')
    imp.add_argument("out_dir", help="folder for shard-*.tar and manifest.json")
    imp.add_argument("--tokens-per-image", type=int, default=256)
    imp.add_argument("--kind", default="imported", help="the sentences' kind (default: imported)")
    imp.add_argument("--samples-per-shard", type=int, default=1000)
    imp.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    imp.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip malformed lines (counted, reported, listed in the manifest) instead of stopping",
    )
    exp = commands.add_parser("export", help="shards → the original's jsonl")
    exp.add_argument("shards", help="a manifest.json, a folder holding one, or a glob of shards")
    exp.add_argument("out", help="the jsonl file to write")
    for sub in (imp, exp):
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns 0 (bad input: one `error:` line on stderr and exit status 1)."""
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if args.command == "import":
        result = import_jsonl(
            args.jsonl,
            args.out_dir,
            args.tokens_per_image,
            args.kind,
            args.samples_per_shard,
            args.vocab_size,
            args.skip_bad,
            progress=not args.no_progress,
            console=console,
        )
        print(result.summary())
    else:
        lines, tokens = export_jsonl(args.shards, args.out, progress=not args.no_progress, console=console)
        print(f"{lines} lines, {tokens} tokens → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Files a run cannot use: each is either recorded in a `SkipCounter` and skipped (with a
`SkippedInputWarning` naming it), or, with ``strict=True``, raised as a `BadInputError` naming the
file. Nothing is dropped without a record."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import TextIO


class BadInputError(ValueError):
    """A file a builder cannot use; the message starts with the file's path."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SkippedInputWarning(UserWarning):
    """Issued once per skip, naming the file, so a skip is visible even when nobody reads the counter
    (filter this category to silence them)."""


@dataclass
class SkipCounter:
    """Counts the files a builder looked at and records each one it skipped, with the reason.

    A builder calls `saw` for every input file it considers and `skip` for every one it leaves out;
    each skip also issues a `SkippedInputWarning` "<path>: skipped (<reason>)" unless ``warn=False``.
    `summary()` gives ``"skipped 2 of 40 files: a.mp4 (invalid data), b.png (truncated)"``.
    """

    files_seen: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warn: bool = True

    def saw(self, n_files: int = 1) -> None:
        """Count `n_files` more input files considered."""
        self.files_seen += n_files

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        """Record `path` as left out for `reason` (and warn, naming it)."""
        self.skipped.append((str(path), reason))
        if self.warn:
            warnings.warn(f"{path}: skipped ({reason})", SkippedInputWarning, stacklevel=2)

    @property
    def n_skipped(self) -> int:
        """Distinct files skipped (one file may be skipped for several reasons, e.g. per stride)."""
        return len({path for path, _ in self.skipped})

    @property
    def skipped_paths(self) -> list[str]:
        """Distinct skipped paths, in the order they were first skipped."""
        return list(dict.fromkeys(path for path, _ in self.skipped))

    def summary(self) -> str:
        """One line: how many files were skipped of how many seen, and each skip with its reason."""
        head = f"skipped {self.n_skipped} of {self.files_seen} files"
        if not self.skipped:
            return head
        return head + ": " + ", ".join(f"{path} ({reason})" for path, reason in self.skipped)

    def report(self, stream: TextIO | None = None) -> None:
        """Print `summary()` (to stdout by default)."""
        print(self.summary(), file=stream if stream is not None else sys.stdout)


def skip_or_raise(path: str | os.PathLike, reason: str, skips: SkipCounter, strict: bool) -> None:
    """Record `path` as skipped, or raise `BadInputError` naming it when ``strict``."""
    if strict:
        raise BadInputError(path, reason)
    skips.skip(path, reason)

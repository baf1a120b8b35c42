"""Curation filters applied to visual sentences before they are tokenized: minimum resolution, aspect
ratio, and near-duplicate removal by perceptual hash (the kind of filtering the LVM authors applied
to LAION, the original's EasyLM/optimizers.py).

Where the filters act: on each built sentence's *source files* (`Curator.admit_sentence`), not on the
file lists handed to the builders. Builders take different things — lists of video or image files
(video, images, colorization), folders of frames (sequence), an input and an output folder (paired) —
so only the sentence's `source` list is common to every kind; a sentence is dropped when any of its
files is rejected. The price: a rejected file costs its whole sentence (in a sentence of 16 randomly
grouped images, the other 15 go too), and the builders have already decoded it. Pre-filtering would
save both, but would need a rule per builder argument.

Decisions, per file:
- `min_side`: the shorter side of the *original* file (PIL header or the video stream's size, read
  without decoding pixels) must be ≥ min_side;
- `max_aspect`: max(w, h) / min(w, h) ≤ max_aspect;
- `dedup_max_distance`: the 64-bit pHash (`imagehash.phash`) of an image within this Hamming distance
  of an image already kept makes it a duplicate; the first one seen is kept. The hash of the image's
  mirror is compared too, so horizontally flipped copies count as duplicates. Videos are not hashed
  (one frame's hash would call every clip with a black first frame a duplicate).

Size and aspect rejections belong to the file and are remembered. A file enters the duplicate index
only when a sentence holding it is kept, so a file whose sentence was dropped for another reason does
not shut out its near-duplicates. Files of one *group* never count as duplicates of each other
(build.py's `dedup_groups`): for frames of one clip or views of one object (sequence, multi_sequence,
multiview) the group is the file's folder, since those look alike by design; for an image and its
annotations (paired, multi_dataset) it is the file stem they share, since pHash works on gray levels
and an image's gray or edge version can hash like the image. Other kinds' files are compared with all
kept files. Annotation maps are compared with other examples' maps too, so two near-identical maps
(say, two empty edge maps) drop the second example: keep the threshold small there, or off.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import av
import imagehash
import numpy as np
from PIL import Image, ImageOps

from lvm.media.files import VIDEO_EXTENSIONS

HASH_SIZE = 8  # pHash side: 8×8 = 64 bits, imagehash's default
HASH_BITS = HASH_SIZE * HASH_SIZE
REASONS = ("unreadable", "min_side", "max_aspect", "duplicate")


def media_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image (from its header) or of a video's first video stream, without
    decoding pixels. Raises ValueError naming the file when neither can be read."""
    path = str(path)
    if path.lower().endswith(VIDEO_EXTENSIONS):
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise ValueError(f"{path}: no video stream")
                stream = container.streams.video[0]
                return stream.codec_context.width, stream.codec_context.height
        except (av.FFmpegError, OSError) as error:
            raise ValueError(f"{path}: cannot read the video's size ({error})") from error
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, Image.UnidentifiedImageError) as error:
        raise ValueError(f"{path}: cannot read the image's size ({error})") from error


def _hash_to_int(image_hash: imagehash.ImageHash) -> int:
    return int.from_bytes(np.packbits(image_hash.hash.reshape(-1)).tobytes(), "big")


def perceptual_hashes(path: str | os.PathLike) -> tuple[int, int]:
    """(pHash of the image, pHash of its horizontal mirror) as 64-bit ints.

    The image is reduced to the 32×32 gray image phash works on once (phash's own first step, so
    phash on it is phash of the file) and mirrored there, which costs a 32×32 flip, not a decode."""
    side = HASH_SIZE * 4  # imagehash.phash's highfreq_factor
    with Image.open(path) as image:
        small = image.convert("L").resize((side, side), Image.Resampling.LANCZOS)
    return (
        _hash_to_int(imagehash.phash(small, HASH_SIZE)),
        _hash_to_int(imagehash.phash(ImageOps.mirror(small), HASH_SIZE)),
    )


class HashIndex:
    """Hashes within Hamming distance `max_distance` of a query, without comparing against all of them.

    Multi-index hashing: the 64 bits are cut into max_distance + 1 blocks; two hashes that differ in at
    most max_distance bits agree exactly on at least one block (pigeonhole), so only entries sharing a
    block value with the query are compared bit by bit."""

    def __init__(self, max_distance: int, n_bits: int = HASH_BITS) -> None:
        if not 0 <= max_distance < n_bits:
            raise ValueError(f"max_distance must be in [0, {n_bits}), got {max_distance}")
        self.max_distance = max_distance
        n_blocks = max_distance + 1
        edges = [round(i * n_bits / n_blocks) for i in range(n_blocks + 1)]
        self._blocks = [(start, (1 << (stop - start)) - 1) for start, stop in zip(edges, edges[1:])]
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._blocks]
        self._entries: list[tuple[int, str, str | None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, value: int, path: str, group: str | None = None) -> None:
        """Index hash `value` of `path` (in `group`)."""
        entry = len(self._entries)
        self._entries.append((value, path, group))
        for table, (shift, mask) in zip(self._tables, self._blocks):
            table.setdefault((value >> shift) & mask, []).append(entry)

    def nearest(self, value: int, group: str | None = None) -> tuple[str, int] | None:
        """(path, distance) of the earliest-added entry within max_distance of `value`, leaving out
        entries of the same (non-None) `group`; None when there is none."""
        candidates: set[int] = set()
        for table, (shift, mask) in zip(self._tables, self._blocks):
            candidates.update(table.get((value >> shift) & mask, ()))
        for entry in sorted(candidates):  # earliest first, so the answer does not depend on set order
            other, path, other_group = self._entries[entry]
            if group is not None and other_group == group:
                continue
            distance = (value ^ other).bit_count()
            if distance <= self.max_distance:
                return path, distance
        return None


@dataclass(frozen=True)
class Rejection:
    """Why a file was turned away: `reason` is one of REASONS, `detail` says by how much."""

    reason: str
    detail: str


class Curator:
    """The curation filters with their counts; a None threshold turns that filter off.

    `admit(path)` judges one file, `admit_sentence(sources)` a sentence's files together (what
    build.py uses). `files_rejected` counts distinct files per reason, `sentences_dropped` dropped
    sentences per reason (that of the sentence's first rejected file), `rejected` maps each rejected
    file to its `Rejection`.
    """

    def __init__(
        self, min_side: int | None = None, max_aspect: float | None = None, dedup_max_distance: int | None = None
    ) -> None:
        if min_side is not None and min_side < 1:
            raise ValueError(f"curation.min_side must be a positive number of pixels or null, got {min_side}")
        if max_aspect is not None and max_aspect < 1:
            raise ValueError(f"curation.max_aspect must be ≥ 1 (long side / short side) or null, got {max_aspect}")
        if dedup_max_distance is not None and not 0 <= dedup_max_distance < HASH_BITS:
            raise ValueError(
                f"curation.dedup_max_distance must be a Hamming distance in [0, {HASH_BITS}) or null, "
                f"got {dedup_max_distance}"
            )
        self.min_side, self.max_aspect, self.dedup_max_distance = min_side, max_aspect, dedup_max_distance
        self.index = HashIndex(dedup_max_distance) if dedup_max_distance is not None else None
        self.rejected: dict[str, Rejection] = {}
        self.files_rejected: Counter[str] = Counter()
        self.sentences_dropped: Counter[str] = Counter()
        self.sentences_kept = 0
        self._measured: set[str] = set()  # files that passed the size filters
        self._kept: set[str] = set()  # files in the duplicate index
        self._hashes: dict[str, tuple[int, int]] = {}

    @property
    def active(self) -> bool:
        """Whether any filter is on (when none is, build.py skips the curator altogether)."""
        return any(v is not None for v in (self.min_side, self.max_aspect, self.dedup_max_distance))

    # -- one file at a time ------------------------------------------------------------------------
    def _reject(self, path: str, reason: str, detail: str) -> Rejection:
        rejection = Rejection(reason, detail)
        self.rejected[path] = rejection
        self.files_rejected[reason] += 1
        return rejection

    def _check_size(self, path: str) -> Rejection | None:
        """The size filters (header only); remembered per file."""
        if path in self.rejected:
            return self.rejected[path]
        if path in self._measured or (self.min_side is None and self.max_aspect is None):
            return None
        try:
            width, height = media_size(path)
        except ValueError as error:
            return self._reject(path, "unreadable", str(error).removeprefix(f"{path}: "))
        short, long = min(width, height), max(width, height)
        if self.min_side is not None and short < self.min_side:
            return self._reject(path, "min_side", f"{width}×{height}: shorter side {short} < min_side {self.min_side}")
        if self.max_aspect is not None and (short == 0 or long / short > self.max_aspect):
            return self._reject(
                path,
                "max_aspect",
                f"{width}×{height}: aspect {long / max(short, 1):.2f} > max_aspect {self.max_aspect}",
            )
        self._measured.add(path)
        return None

    def _hashes_of(self, path: str) -> tuple[int, int] | Rejection:
        if path not in self._hashes:
            try:
                self._hashes[path] = perceptual_hashes(path)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                return self._reject(path, "unreadable", f"cannot hash ({error})")
        return self._hashes[path]

    def admit(self, path: str | os.PathLike, group: str | None = None) -> bool:
        """Judge one file (kept files enter the duplicate index); see `admit_sentence`."""
        return self.admit_sentence([path], [group])

    # -- a sentence's files together -----------------------------------------------------------------
    def admit_sentence(self, sources: Sequence[str | os.PathLike], groups: Sequence[str | None] | None = None) -> bool:
        """True when every distinct file of `sources` passes every filter on; the files then enter the
        duplicate index. `groups` (one per source, None = no group) name files that are not compared
        with each other. On False, `sentences_dropped` counts the first rejected file's reason."""
        if groups is not None and len(groups) != len(sources):
            raise ValueError(f"admit_sentence: {len(groups)} groups for {len(sources)} sources")
        group_of = dict(zip(map(str, sources), groups if groups is not None else [None] * len(sources)))
        paths = list(group_of)  # distinct, in order
        rejection = next(filter(None, map(self._check_size, paths)), None)
        if rejection is None and self.index is not None:
            rejection, new = self._check_duplicates(paths, group_of)
            if rejection is None:
                for path, (value, _) in new:
                    self.index.add(value, path, group_of[path])
                    self._kept.add(path)
        if rejection is not None:
            self.sentences_dropped[rejection.reason] += 1
            return False
        self.sentences_kept += 1
        return True

    def _check_duplicates(
        self, paths: Sequence[str], group_of: dict[str, str | None]
    ) -> tuple[Rejection | None, list[tuple[str, tuple[int, int]]]]:
        """The first duplicate among `paths` (against kept files and the earlier new files of this
        sentence), and the new files' hashes."""
        assert self.index is not None
        new: list[tuple[str, tuple[int, int]]] = []
        for path in paths:
            if path in self.rejected:
                return self.rejected[path], new
            if path in self._kept or path.lower().endswith(VIDEO_EXTENSIONS):
                continue
            hashes = self._hashes_of(path)
            if isinstance(hashes, Rejection):
                return hashes, new
            match = self._nearest(hashes, group_of[path], new, group_of)
            if match is not None:
                other, distance, mirrored = match
                detail = (
                    f"near-duplicate of {other}{' mirrored' if mirrored else ''} "
                    f"(Hamming distance {distance} ≤ {self.dedup_max_distance})"
                )
                return self._reject(path, "duplicate", detail), new
            new.append((path, hashes))
        return None, new

    def _nearest(
        self,
        hashes: tuple[int, int],
        group: str | None,
        new: Sequence[tuple[str, tuple[int, int]]],
        group_of: dict[str, str | None],
    ) -> tuple[str, int, bool] | None:
        assert self.index is not None
        for mirrored, value in enumerate(hashes):
            found = self.index.nearest(value, group)
            if found is None:  # earlier files of this very sentence are not indexed yet
                found = next(
                    (
                        (p, d)
                        for p, (v, _) in new
                        if group is None or group_of[p] != group
                        if (d := (value ^ v).bit_count()) <= self.index.max_distance
                    ),
                    None,
                )
            if found is not None:
                return found[0], found[1], bool(mirrored)
        return None

    # -- reporting ---------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Json-ready counts and the rejected files with reasons (stored in manifest.json)."""
        return {
            "thresholds": {
                "min_side": self.min_side,
                "max_aspect": self.max_aspect,
                "dedup_max_distance": self.dedup_max_distance,
            },
            "sentences_kept": self.sentences_kept,
            "sentences_dropped": {r: self.sentences_dropped[r] for r in REASONS if self.sentences_dropped[r]},
            "files_rejected": {r: self.files_rejected[r] for r in REASONS if self.files_rejected[r]},
            "rejected": [{"path": path, "reason": r.reason, "detail": r.detail} for path, r in self.rejected.items()],
        }

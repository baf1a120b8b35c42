"""Reading the samples of one shard: a fast reader for the plain tars our writer makes, falling back to
WebDataset's reader for anything else (compressed or foreign tars)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import webdataset as wds


class NotPlainTar(Exception):
    """The shard uses tar features the fast reader leaves to webdataset (long names, pax headers)."""


def plain_tar_samples(path: str) -> list[dict[str, Any]]:
    """Samples {"__key__", suffix: bytes} of a tar of plain ustar regular files, as webdataset's
    TarWriter writes our shards, grouped by key as webdataset groups them (name up to its first dot).

    Why not webdataset here: its reader goes through Python's tarfile, whose header parsing was 73 %
    of the DataModule's time (benchmarks/bench_data.py); reading the file at once and taking only
    name, size and type from each 512-byte header is 7-9x faster. Anything else (pax or GNU headers,
    links, directories) raises NotPlainTar before a sample is returned, and webdataset reads it.
    """
    with open(path, "rb") as f:
        data = f.read()
    samples: list[dict[str, Any]] = []
    offset = 0
    while offset + 512 <= len(data):
        header = data[offset : offset + 512]
        if header.count(0) == 512:  # end-of-archive block
            return samples
        # The checksum counts its own 8-byte field as spaces (POSIX ustar).
        stored = header[148:156].rstrip(b"\0 ")
        if not stored or int(stored, 8) != sum(header[:148]) + 256 + sum(header[156:]):
            raise ValueError(f"{path}: corrupt tar header at byte {offset} (checksum mismatch)")
        if header[156:157] not in (b"0", b"\0") or header[345:500].strip(b"\0") or header[124] & 0x80:
            raise NotPlainTar
        name = header[:100].rstrip(b"\0").decode()
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        start = offset + 512
        if start + size > len(data):
            raise ValueError(f"{path}: truncated: member {name} needs {size} bytes, {len(data) - start} left")
        key, _, suffix = os.path.basename(name).partition(".")
        key = os.path.join(os.path.dirname(name), key) if os.path.dirname(name) else key
        if not samples or samples[-1]["__key__"] != key:
            samples.append({"__key__": key})
        samples[-1][suffix] = data[start : start + size]
        offset = start + (size + 511) // 512 * 512
    if offset != len(data) or samples:
        # A tar ends with zero blocks; running out of bytes without one means the file was cut.
        raise ValueError(f"{path}: truncated: no end-of-archive marker after {len(samples)} samples")
    return samples


def shard_samples(path: str) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard: the fast plain-tar reader, or webdataset for any other tar."""
    try:
        yield from plain_tar_samples(path)
        return
    except NotPlainTar:
        pass
    # One explicit file: no node/worker splitting and no shuffling here; callers own both.
    yield from wds.WebDataset(path, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)

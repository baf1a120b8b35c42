"""WebDataset shards of visual sentences: one writer, one manifest, readers that name what is wrong.

On disk (the original's DATASET.md and tokenize_examples/, stored as uint16 instead of the original's base64 int32
jsonl):
    <out_dir>/<prefix>-000000.tar     samples {key}.tokens.npy (1-D uint16) + {key}.json
    <out_dir>/manifest.json           {"version": 1, "shards": [{"path", "samples", "tokens"}], "samples",
                                       "tokens", "kinds": {kind: tokens}, "tokens_per_image", "vocab_size",
                                       "config"}
A shard gets its final name only once it is complete, and the manifest is written last, so a directory
with a manifest holds a complete, consistent shard set.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import webdataset as wds

from lvm.data.manifest import MANIFEST_NAME, expand_sources, manifest_dict, write_manifest
from lvm.data.tar_reader import shard_samples

DEFAULT_VOCAB_SIZE = 8292  # 8192 VQ codes + 100 reserved ids (the original's EasyLM/models/llama/llama_model.py)
# json fields the writer owns; everything else in a sample's json is the sentence's `meta`.
_RESERVED_JSON_KEYS = ("kind", "source", "n_images", "tokens_per_image")


@dataclass
class VisualSentence:
    """The VQ codes of several images in a row: `tokens` (n_images · tokens_per_image,) uint16.

    `kind` names the data pipeline ("video", "paired", ...), `source` the files it was made from, `meta`
    any extra json-serialisable facts. `key` is set by readers (the sample's `__key__`); writers ignore it.
    """

    tokens: np.ndarray
    kind: str
    source: list[str]
    n_images: int
    meta: dict[str, Any] = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, np.ndarray) or self.tokens.ndim != 1:
            shape = getattr(self.tokens, "shape", type(self.tokens).__name__)
            raise ValueError(f"VisualSentence.tokens must be a 1-D numpy array, got {shape}")
        if self.tokens.dtype != np.uint16:
            raise ValueError(
                f"VisualSentence.tokens must be uint16 (got {self.tokens.dtype}); check ids < 65536 before "
                f"converting with .astype(np.uint16)"
            )
        if not isinstance(self.n_images, (int, np.integer)) or self.n_images < 1:
            raise ValueError(f"VisualSentence.n_images must be a positive int, got {self.n_images!r}")
        self.n_images = int(self.n_images)
        if len(self.tokens) == 0 or len(self.tokens) % self.n_images:
            raise ValueError(
                f"VisualSentence has {len(self.tokens)} tokens, not a positive multiple of n_images={self.n_images}"
            )
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"VisualSentence.kind must be a non-empty string, got {self.kind!r}")
        if isinstance(self.source, (str, bytes)) or not all(isinstance(s, str) for s in self.source):
            raise ValueError(f"VisualSentence.source must be a list of file names, got {self.source!r}")
        self.source = list(self.source)

    @property
    def tokens_per_image(self) -> int:
        return len(self.tokens) // self.n_images


def _encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# The header np.save writes for a 1-D array; matching it directly is ~30x faster than np.load's
# literal_eval, which dominated reading time. Anything else goes through np.load.
_NPY_1D_HEADER = re.compile(rb"\{'descr': '([<>|][iu][1248])', 'fortran_order': False, 'shape': \((\d+),\), \}")


def _decode_npy(data: bytes) -> np.ndarray:
    if data[:8] == b"\x93NUMPY\x01\x00":
        header_end = 10 + int.from_bytes(data[8:10], "little")
        match = _NPY_1D_HEADER.match(data, 10, header_end)
        if match:
            return np.frombuffer(data, dtype=np.dtype(match[1].decode()), count=int(match[2]), offset=header_end)
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_sample(
    sentence: VisualSentence, key: str, vocab_size: int, tokens_per_image: int, where: str
) -> dict[str, Any]:
    """A sentence as a webdataset sample {"__key__", "tokens.npy", "json"}, after checking its ids are
    < `vocab_size` and its images hold `tokens_per_image` tokens; errors start with `where`."""
    top = int(sentence.tokens.max())
    if top >= vocab_size:
        raise ValueError(f"{where}: field 'tokens' holds id {top} ≥ vocab_size {vocab_size}")
    if sentence.tokens_per_image != tokens_per_image:
        raise ValueError(
            f"{where}: {sentence.n_images} images of {sentence.tokens_per_image} tokens, but this shard set "
            f"has tokens_per_image={tokens_per_image}"
        )
    clash = sorted(set(sentence.meta) & set(_RESERVED_JSON_KEYS))
    if clash:
        raise ValueError(f"{where}: meta keys {clash} are reserved for the sample's own fields")
    info = {
        "kind": sentence.kind,
        "source": sentence.source,
        "n_images": sentence.n_images,
        "tokens_per_image": sentence.tokens_per_image,
        **sentence.meta,
    }
    return {"__key__": key, "tokens.npy": _encode_npy(sentence.tokens), "json": json.dumps(info).encode()}


def write_shard_file(
    path: str | os.PathLike, sentences: list[VisualSentence], keys: list[str], vocab_size: int, tokens_per_image: int
) -> dict[str, Any]:
    """Write one complete shard atomically (`path`.tmp, fsync, rename); returns its manifest entry
    {"path": name, "samples", "tokens"} plus "kinds" {kind: tokens}."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    kinds: dict[str, int] = {}
    try:
        with open(tmp, "wb") as file:
            tar = wds.TarWriter(file, encoder=False, mtime=0)
            for sentence, key in zip(sentences, keys, strict=True):
                tar.write(encode_sample(sentence, key, vocab_size, tokens_per_image, f"{path} (sample {key})"))
                kinds[sentence.kind] = kinds.get(sentence.kind, 0) + len(sentence.tokens)
            tar.close()
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": path.name, "samples": len(sentences), "tokens": sum(kinds.values()), "kinds": kinds}


class ShardWriter:
    """Writes visual sentences into `{prefix}-{i:06d}.tar` shards of at most `max_samples_per_shard` samples.

    Use as a context manager; leaving the block normally writes `manifest.json`, leaving it with an
    exception writes none and removes the unfinished shard. `tokens_per_image` defaults to that of the
    first sentence; every sentence must match it. `config` (json-serialisable) is stored in the manifest.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        prefix: str = "shard",
        max_samples_per_shard: int = 1000,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        tokens_per_image: int | None = None,
        config: dict | None = None,
    ) -> None:
        if max_samples_per_shard < 1:
            raise ValueError(f"max_samples_per_shard must be ≥ 1, got {max_samples_per_shard}")
        if not 0 < vocab_size <= 65536:
            raise ValueError(f"vocab_size {vocab_size} does not fit uint16 tokens")
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.max_samples_per_shard = max_samples_per_shard
        self.vocab_size = vocab_size
        self.tokens_per_image = tokens_per_image
        self.config = config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A manifest left from an earlier run would describe shards this run is about to overwrite.
        (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        self._shards: list[dict[str, Any]] = []
        self._kinds: dict[str, int] = {}
        self._count = 0
        self._file: io.BufferedWriter | None = None
        self._tar: wds.TarWriter | None = None
        self._closed = False

    # -- the current shard ------------------------------------------------------------------------
    def _shard_name(self) -> str:
        return f"{self.prefix}-{len(self._shards):06d}.tar"

    def _open_shard(self) -> None:
        name = self._shard_name()
        self._file = open(self.out_dir / (name + ".tmp"), "wb")
        # Fixed mtime: the same sentences give byte-identical shards.
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=0)
        self._shards.append({"path": name, "samples": 0, "tokens": 0})

    def _finish_shard(self) -> None:
        assert self._tar is not None and self._file is not None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = self._shards[-1]["path"]
        os.replace(self.out_dir / (name + ".tmp"), self.out_dir / name)
        self._tar = self._file = None

    def _abort_shard(self) -> None:
        if self._file is None:
            return
        name = self._shards.pop()["path"]
        try:
            if self._tar is not None:
                self._tar.close()
        finally:
            self._file.close()
            (self.out_dir / (name + ".tmp")).unlink(missing_ok=True)
            self._tar = self._file = None

    # -- public -----------------------------------------------------------------------------------
    def write(self, sentence: VisualSentence) -> str:
        """Append one sentence; returns its sample key."""
        if self._closed:
            raise RuntimeError(f"ShardWriter({self.out_dir}) is closed")
        key = f"{self._count:09d}"
        where = f"{self.out_dir / (self._shards[-1]['path'] if self._tar else self._shard_name())} (sample {key})"
        if self.tokens_per_image is None:
            self.tokens_per_image = sentence.tokens_per_image
        sample = encode_sample(sentence, key, self.vocab_size, self.tokens_per_image, where)
        if self._tar is None:
            self._open_shard()
        self._tar.write(sample)
        self._count += 1
        shard = self._shards[-1]
        shard["samples"] += 1
        shard["tokens"] += len(sentence.tokens)
        self._kinds[sentence.kind] = self._kinds.get(sentence.kind, 0) + len(sentence.tokens)
        if shard["samples"] >= self.max_samples_per_shard:
            self._finish_shard()
        return key

    def close(self) -> dict[str, Any]:
        """Finish the open shard and write the manifest atomically; returns the manifest."""
        if self._tar is not None:
            self._finish_shard()
        manifest = manifest_dict(self._shards, self._kinds, self.tokens_per_image, self.vocab_size, self.config)
        if not self._closed:
            write_manifest(self.out_dir, manifest)
        self._closed = True
        return manifest

    def abort(self) -> None:
        """Drop the unfinished shard and write no manifest (finished shards stay, unlisted)."""
        self._abort_shard()
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_shard(path: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Iterator[VisualSentence]:
    """The sentences of one shard, in stored order; malformed samples raise naming shard and key."""
    path = str(path)
    for sample in shard_samples(path):
        key = sample["__key__"]
        if "tokens.npy" not in sample:
            members = sorted(k for k in sample if not k.startswith("_"))
            raise ValueError(f"{path}: sample {key} has no 'tokens.npy' (members: {members})")
        if "json" not in sample:
            raise ValueError(f"{path}: sample {key} has no 'json'")
        try:
            tokens = _decode_npy(sample["tokens.npy"])
            info = json.loads(sample["json"])
        except ValueError as e:
            raise ValueError(f"{path}: sample {key} cannot be decoded ({e})") from None
        if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
            raise ValueError(f"{path}: sample {key} field 'tokens' is {tokens.dtype} {tokens.shape}, expected 1-D ints")
        if len(tokens):
            # Unsigned ids (every shard we write) cannot be negative: one reduction instead of two.
            top, bottom = int(tokens.max()), 0 if tokens.dtype.kind == "u" else int(tokens.min())
            if top >= vocab_size or bottom < 0:
                bad = top if top >= vocab_size else bottom
                raise ValueError(f"{path}: field 'tokens' holds id {bad} outside [0, {vocab_size}) (sample {key})")
        for name in ("kind", "source", "n_images"):
            if name not in info:
                raise ValueError(f"{path}: sample {key} json has no field '{name}'")
        try:
            sentence = VisualSentence(
                tokens=tokens.astype(np.uint16, copy=False),
                kind=info["kind"],
                source=info["source"],
                n_images=info["n_images"],
                meta={k: v for k, v in info.items() if k not in _RESERVED_JSON_KEYS},
                key=key,
            )
        except ValueError as e:
            raise ValueError(f"{path}: sample {key}: {e}") from None
        stored_tpi = info.get("tokens_per_image")
        if stored_tpi is not None and stored_tpi != sentence.tokens_per_image:
            raise ValueError(
                f"{path}: sample {key} json says tokens_per_image={stored_tpi} but holds "
                f"{len(tokens)} tokens for {sentence.n_images} images"
            )
        yield sentence


def read_sentences(spec: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[VisualSentence]:
    """Every sentence of a source spec (see `expand_sources`), shards in sorted order; for small data."""
    return [s for path in expand_sources(spec) for s in iter_shard(path, vocab_size)]

"""Visual sentences in pixels (`ImageSentence`, what the `data_pipelines` builders produce) → VQGAN codes
→ WebDataset shards with a manifest: the step every builder, and the demo, ends with."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from lvm.data.shards import ShardWriter, VisualSentence
from lvm.media.images import images_to_tensor
from lvm.tokenizer.codec import encode_images
from lvm.tokenizer.vqgan import VQGANModel


@dataclass
class ImageSentence:
    """One visual sentence: images (HWC uint8 RGB, all ``size``×``size``) in the order they are read."""

    images: list[np.ndarray]
    kind: str
    source: list[str]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def tokenize_sentences(
    sentences: Iterable[ImageSentence],
    vqgan: VQGANModel,
    images_per_batch: int = 256,
    cached_images: int = 65_536,
) -> Iterator[VisualSentence]:
    """Encode sentences in batches of about `images_per_batch` images, yielding them in input order.

    An image that appears again (the same pixels: a frame shared by overlapping clips, a photo in several
    analogy sentences) reuses its codes instead of running the encoder again; the codes of the last
    `cached_images` distinct images are kept (0: no reuse)."""
    cache: OrderedDict[bytes, np.ndarray] = OrderedDict()  # pixel digest → codes, least recently used first
    pending: list[ImageSentence] = []

    def flush() -> Iterator[VisualSentence]:
        keys = [[_pixel_digest(image) for image in sentence.images] for sentence in pending]
        known = {key: cache[key] for row in keys for key in row if key in cache}
        new: dict[bytes, np.ndarray] = {}
        for sentence, row in zip(pending, keys):
            for key, image in zip(row, sentence.images):
                if key not in known:
                    new.setdefault(key, image)
        if new:
            codes = encode_images(vqgan, images_to_tensor(list(new.values())))
            known |= dict(zip(new, codes.cpu().numpy().astype(np.uint16)))
        if cached_images:
            for key, image_codes in known.items():
                cache[key] = image_codes
                cache.move_to_end(key)
            while len(cache) > cached_images:
                cache.popitem(last=False)
        for sentence, row in zip(pending, keys):
            yield VisualSentence(
                tokens=np.concatenate([known[key] for key in row]),
                kind=sentence.kind,
                source=list(sentence.source),
                n_images=len(sentence),
                meta=dict(sentence.meta),
            )
        pending.clear()

    n_images = 0
    for sentence in sentences:
        pending.append(sentence)
        n_images += len(sentence)
        if n_images >= images_per_batch:
            yield from flush()
            n_images = 0
    if pending:
        yield from flush()


def _pixel_digest(image: np.ndarray) -> bytes:
    """A 16-byte digest of an image's shape, dtype and pixels: equal digests mean equal images."""
    digest = hashlib.blake2b(repr((image.shape, image.dtype.str)).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()


def write_sentence_shards(
    sentences: Iterable[ImageSentence],
    vqgan: VQGANModel,
    out_dir: str | os.PathLike,
    max_samples_per_shard: int = 1000,
    images_per_batch: int = 256,
    vocab_size: int | None = None,
    config: dict | None = None,
) -> str:
    """Tokenize `sentences` and write them as shards + manifest.json under `out_dir`; returns the manifest path."""
    writer = ShardWriter(
        out_dir,
        max_samples_per_shard=max_samples_per_shard,
        vocab_size=vocab_size or vqgan.config.num_embeddings,
        tokens_per_image=vqgan.config.tokens_per_image,
        config=config,
    )
    with writer:
        for sentence in tokenize_sentences(sentences, vqgan, images_per_batch):
            writer.write(sentence)
    return os.path.join(os.fspath(out_dir), "manifest.json")

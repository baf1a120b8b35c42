"""Visual sentences in pixels (`ImageSentence`, what the `data_pipelines` builders produce) → VQGAN codes
→ WebDataset shards with a manifest: the step every builder, and the demo, ends with."""

from __future__ import annotations

import os
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
    sentences: Iterable[ImageSentence], vqgan: VQGANModel, images_per_batch: int = 256
) -> Iterator[VisualSentence]:
    """Encode sentences in batches of about `images_per_batch` images, yielding them in input order."""
    pending: list[ImageSentence] = []

    def flush() -> Iterator[VisualSentence]:
        codes = encode_images(vqgan, images_to_tensor([im for s in pending for im in s.images]))
        codes = codes.cpu().numpy().astype(np.uint16)
        start = 0
        for sentence in pending:
            rows = codes[start : start + len(sentence)]
            start += len(sentence)
            yield VisualSentence(
                tokens=rows.reshape(-1),
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

"""Packing sentences into training windows as the original does: concatenated with no separator tokens,
cut into windows of seq_len + 1 tokens; and a seeded shuffle buffer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from lvm.data.shards import VisualSentence

Sample = dict[str, torch.Tensor]  # one training window: input_ids and labels


def check_tokens_per_image(sentence: VisualSentence, path: str, tokens_per_image: int) -> None:
    # Packing keeps images whole only if every sentence uses the configured image size.
    if sentence.tokens_per_image != tokens_per_image:
        raise ValueError(
            f"{path}: sample {sentence.key} has {sentence.tokens_per_image} tokens per image, but "
            f"data.tokens_per_image is {tokens_per_image}"
        )


def pack_windows(sentences: Iterator[VisualSentence], seq_len: int, skip_tokens: int = 0) -> Iterator[np.ndarray]:
    """Windows (seq_len + 1,) int64 of the concatenated sentences, at a stride of seq_len tokens.

    Window k covers stream tokens [k·seq_len, (k+1)·seq_len]; `skip_tokens` (a multiple of seq_len)
    drops the first windows without building them.
    """
    pieces: list[np.ndarray] = []
    have = 0
    for sentence in sentences:
        tokens = sentence.tokens
        if skip_tokens:
            if len(tokens) <= skip_tokens:
                skip_tokens -= len(tokens)
                continue
            tokens, skip_tokens = tokens[skip_tokens:], 0
        pieces.append(tokens)
        have += len(tokens)
        if have <= seq_len:
            continue
        stream = np.concatenate(pieces).astype(np.int64, copy=False)
        start = 0
        while len(stream) - start > seq_len:
            yield stream[start : start + seq_len + 1]
            start += seq_len
        pieces, have = [stream[start:]], len(stream) - start


def window_sample(window: np.ndarray) -> Sample:
    return {"input_ids": torch.from_numpy(window[:-1]), "labels": torch.from_numpy(window[1:])}


def shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Buffer shuffle: once `size` items are held, each new item swaps out a uniformly chosen one."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)  # only reached by finite inputs
    yield from buffer

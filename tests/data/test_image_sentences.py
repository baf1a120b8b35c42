"""Image sentences → codes: every image is encoded once, however many sentences repeat it, and the codes are
those of encoding each image on its own."""

import numpy as np
import pytest
import torch

from lvm.data.image_sentences import ImageSentence, tokenize_sentences
from lvm.media.images import images_to_tensor
from lvm.tokenizer.codec import encode_images
from lvm.tokenizer.vqgan import VQGANModel
from tests.tokenizer.conftest import tiny_config


@pytest.fixture(scope="module")
def vqgan() -> VQGANModel:
    torch.manual_seed(0)
    return VQGANModel(tiny_config()).eval()


def counted_images(vqgan: VQGANModel) -> list[int]:
    """A list that receives the batch size of every encoder call (a hook on the real encoder)."""
    seen: list[int] = []
    vqgan.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return seen


def test_repeated_images_are_encoded_once_with_their_own_codes(vqgan):
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    # 5 analogy-like sentences of 4 images drawn from 6 photos; copies, so equal pixels are not the same object.
    picks = [[0, 1, 2, 3], [3, 4, 5, 0], [1, 1, 2, 2], [5, 4, 3, 2], [0, 5, 1, 4]]
    sentences = [ImageSentence([photos[i].copy() for i in row], "paired", [f"s{n}"]) for n, row in enumerate(picks)]
    seen = counted_images(vqgan)

    # Batches of ~8 images: repeats fall both inside one batch and across batches.
    out = list(tokenize_sentences(sentences, vqgan, images_per_batch=8))
    assert sum(seen) == 6
    own = encode_images(vqgan, images_to_tensor(photos)).numpy()
    for sentence, row in zip(out, picks):
        assert sentence.n_images == 4 and sentence.tokens.dtype == np.uint16
        np.testing.assert_array_equal(sentence.tokens, np.concatenate([own[i] for i in row]))

    # Without the cache only repeats inside one batch are saved. Batches (sentences 0-1, 2-3, 4) hold the
    # photos {0, 1, 2, 3, 4, 5}, {1, 2, 3, 4, 5} and {0, 1, 4, 5}: 6 + 5 + 4 encodings.
    seen.clear()
    uncached = list(tokenize_sentences(sentences, vqgan, images_per_batch=8, cached_images=0))
    assert sum(seen) == 15
    for a, b in zip(out, uncached):
        np.testing.assert_array_equal(a.tokens, b.tokens)

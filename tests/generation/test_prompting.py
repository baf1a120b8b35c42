"""Visual prompting: the sliding context window against a hand-rolled loop, and images in → images out."""

import pytest
import torch

from lvm.generation.prompting import (
    analogy_prompting,
    context_frame_indices,
    continue_image_codes,
    sequential_prompting,
)
from lvm.generation.sampler import SamplingConfig
from lvm.model import LLaMA, ModelConfig
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel

N = 4  # tokens per image of the toy model below


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ModelConfig(
        hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=40, max_seq_len=3 * N, init_std=0.3
    )
    return LLaMA(config).eval()


def greedy_by_recomputation(model: LLaMA, context: torch.Tensor, n_tokens: int) -> torch.Tensor:
    tokens = context.clone()
    for _ in range(n_tokens):
        logits = model(tokens[None])[0, -1, :32]
        tokens = torch.cat([tokens, logits.argmax()[None]])
    return tokens[len(context) :]


def test_sliding_window_keeps_the_last_images(model):
    context = torch.randint(0, 32, (5, N), generator=torch.Generator().manual_seed(1))
    new = continue_image_codes(
        model, [context], n_new_images=3, sampling=SamplingConfig(temperature=0, num_vq_codes=32)
    )
    assert new.shape == (1, 1, 3, N)
    new = new[0]
    # the model holds 3 images: each new image is written from the 2 images before it
    images = list(context)
    for i in range(3):
        expected = greedy_by_recomputation(model, torch.cat(images[-2:]), N)
        assert torch.equal(new[0, i], expected), i
        images.append(expected)


def test_only_vq_codes_are_written(model):
    context = torch.randint(0, 32, (2, N), generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(0)
    new = continue_image_codes(
        model, [context], 4, SamplingConfig(temperature=1.5, num_vq_codes=7), n_candidates=5, generator=g
    )
    assert new.shape == (1, 5, 4, N) and int(new.max()) < 7


def test_prompts_of_different_lengths_decode_together_as_they_do_alone(model):
    g = torch.Generator().manual_seed(3)
    contexts = [torch.randint(0, 32, (k, N), generator=g) for k in (1, 2, 4)]
    greedy = SamplingConfig(temperature=0, num_vq_codes=32)
    together = continue_image_codes(model, contexts, 3, greedy, n_candidates=2)
    assert together.shape == (3, 2, 3, N)
    for context, row in zip(contexts, together):
        assert torch.equal(row, continue_image_codes(model, [context], 3, greedy, n_candidates=2)[0])
    with pytest.raises(ValueError, match="one image size"):
        continue_image_codes(model, [contexts[0], torch.zeros(2, N + 1, dtype=torch.long)], 1, greedy)


@pytest.fixture(scope="module")
def vqgan():
    torch.manual_seed(0)
    config = VQGANConfig(
        resolution=32,
        hidden_channels=32,
        channel_mult=(1, 1, 1),
        num_res_blocks=1,
        attn_resolutions=(),
        z_channels=32,
        num_embeddings=24,
        quantized_embed_dim=8,
    )
    return VQGANModel(config).eval()


def test_images_in_images_out(model, vqgan):
    frames = torch.rand(4, 3, 32, 32)
    assert vqgan.config.tokens_per_image == 64
    big = LLaMA(
        ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=40, max_seq_len=6 * 64)
    ).eval()
    nxt = sequential_prompting(
        big, vqgan, frames, n_new_frames=2, n_candidates=2, generator=torch.Generator().manual_seed(0)
    )
    assert nxt.shape == (2, 2, 3, 32, 32) and 0.0 <= float(nxt.min()) and float(nxt.max()) <= 1.0
    pairs = [(frames[0], frames[1]), (frames[2], frames[3])]
    y = analogy_prompting(big, vqgan, pairs, frames[0], SamplingConfig(temperature=0))
    assert y.shape == (1, 3, 32, 32)
    # the analogy layout is x1 y1 x2 y2 xq: the same as continuing those five frames
    same = sequential_prompting(
        big,
        vqgan,
        torch.stack([frames[0], frames[1], frames[2], frames[3], frames[0]]),
        1,
        SamplingConfig(temperature=0),
    )
    assert torch.equal(y, same[:, 0])
    with pytest.raises(ValueError, match="at least one"):
        analogy_prompting(big, vqgan, [], frames[0])


def test_context_frames_count_back_from_the_last():
    assert context_frame_indices(10, 3, stride=2) == [5, 7, 9]
    assert context_frame_indices(10, None, stride=4) == [1, 5, 9]
    assert context_frame_indices(4, 8) == [0, 1, 2, 3]

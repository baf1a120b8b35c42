"""KV-cached decoding against full recomputation; sampling filters against direct computations."""

import pytest
import torch

from lvm.generation.sampler import SamplingConfig, generate_tokens, sample_next_tokens
from lvm.model import LLaMA, ModelConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # Larger init std than 0.02 so greedy paths are not all the same token.
    config = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, vocab_size=120,
                         max_seq_len=96, init_std=0.3)
    return LLaMA(config).eval()


def test_greedy_with_cache_equals_full_recomputation(model):
    prompt = torch.randint(0, 100, (3, 20), generator=torch.Generator().manual_seed(3))
    greedy = SamplingConfig(temperature=0, num_vq_codes=100)
    cached = generate_tokens(model, prompt, 40, greedy)
    uncached = generate_tokens(model, prompt, 40, greedy, use_kv_cache=False)
    assert cached.shape == (3, 40)
    assert torch.equal(cached, uncached)
    assert len(cached.unique()) > 3  # a non-degenerate path, so the comparison means something
    assert not model.has_kv_cache  # the cache is released afterwards


def test_seeded_sampling_is_reproducible_and_candidates_differ(model):
    prompt = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(4))
    sampling = SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, num_vq_codes=100)
    a = generate_tokens(model, prompt, 16, sampling, n_candidates=3, generator=torch.Generator().manual_seed(7))
    b = generate_tokens(model, prompt, 16, sampling, n_candidates=3, generator=torch.Generator().manual_seed(7))
    assert a.shape == (6, 16) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_special_and_unused_ids_are_never_sampled():
    logits = torch.zeros(4, 120)
    logits[:, 100:] = 50.0  # specials overwhelmingly likely, yet suppressed
    for temperature in (0.0, 1.0):
        ids = sample_next_tokens(logits, SamplingConfig(temperature=temperature, num_vq_codes=100),
                                 torch.Generator().manual_seed(0))
        assert (ids < 100).all()


def test_top_k_and_top_p_keep_exactly_the_expected_tokens():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.07, 0.03]])
    logits = probs.log()
    gen = torch.Generator().manual_seed(0)
    draws = lambda cfg: {int(sample_next_tokens(logits, cfg, gen)) for _ in range(400)}
    assert draws(SamplingConfig(top_k=2, num_vq_codes=5)) == {0, 1}
    # top_p 0.8: 0.5 + 0.25 = 0.75 < 0.8, so the third token is needed; the fourth is not.
    assert draws(SamplingConfig(top_p=0.8, num_vq_codes=5)) == {0, 1, 2}
    assert draws(SamplingConfig(top_p=0.5, num_vq_codes=5)) == {0}


def test_bad_requests_are_refused(model):
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 96"):
        generate_tokens(model, torch.zeros(1, 90, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)

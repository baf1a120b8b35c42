"""Sampling filters against direct computations."""

import pytest
import torch

from lvm.generation.sampler import SamplingConfig, sample_next_tokens


def test_special_and_unused_ids_are_never_sampled():
    logits = torch.zeros(4, 120)
    logits[:, 100:] = 50.0  # specials overwhelmingly likely, yet suppressed
    for temperature in (0.0, 1.0):
        ids = sample_next_tokens(
            logits, SamplingConfig(temperature=temperature, num_vq_codes=100), torch.Generator().manual_seed(0)
        )
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


def test_bad_settings_are_refused():
    for bad in ({"top_p": 0}, {"top_k": 0}, {"temperature": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingConfig(**bad)

"""Held-out losses against direct computations."""

import math

import numpy as np
import pytest
import torch

from lvm.eval.heldout import (
    answer_loss_by_shot,
    copy_last_frame_nll,
    fit_copy_eps,
    heldout_report,
    model_nll,
    unigram_log_probs,
    unigram_nll,
)
from lvm.model import LLaMA, ModelConfig
from lvm.training.lit_module import next_token_loss


def test_unigram_is_smoothed_frequency():
    log_probs = unigram_log_probs([np.array([0, 0, 1]), np.array([1, 2])], num_codes=4, alpha=0.5)
    expected = np.array([2.5, 2.5, 1.5, 0.5]) / 7.0
    np.testing.assert_allclose(np.exp(log_probs), expected)
    np.testing.assert_allclose(unigram_nll(np.array([3, 0, 2]), log_probs), -np.log(expected[[0, 2]]))


def test_copy_last_frame_is_nearly_free_on_a_static_video_and_eps_is_fitted():
    frame = np.arange(4)
    static = np.tile(frame, 5)  # 5 identical frames of 4 tokens
    log_probs = np.log(np.full(4, 0.25))
    nll = copy_last_frame_nll(static, 4, log_probs, eps=0.01)
    assert nll.shape == (16,)
    np.testing.assert_allclose(nll, -math.log(0.99 + 0.01 * 0.25))
    # Half the tokens change every frame → the fitted ε is near the best mixture weight, not at the edges.
    rng = np.random.default_rng(0)
    videos = []
    for _ in range(20):
        frames = [rng.integers(0, 4, 8)]
        for _ in range(5):
            nxt = frames[-1].copy()
            change = rng.random(8) < 0.5
            nxt[change] = rng.integers(0, 4, change.sum())
            frames.append(nxt)
        videos.append(np.concatenate(frames))
    eps = fit_copy_eps(videos, 8, log_probs)
    assert 0.3 < eps < 0.9


def test_model_nll_matches_the_training_loss_and_report_keys():
    torch.manual_seed(0)
    model = LLaMA(ModelConfig(vocab_size=64, max_seq_len=32)).eval()
    rng = np.random.default_rng(1)
    sentences = [rng.integers(0, 16, 32) for _ in range(5)]
    rows = model_nll(model, sentences, batch_size=2)
    ids = torch.as_tensor(np.stack(sentences))
    with torch.no_grad():
        expected = next_token_loss(model(ids[:, :-1]), ids[:, 1:])
    assert float(np.mean(np.concatenate(rows))) == pytest.approx(float(expected), rel=1e-5)

    report = heldout_report(
        model,
        sentences,
        ["video", "paired", "video", "sequence", "video"],
        sentences,
        ["video"] * 5,
        tokens_per_image=8,
        num_codes=16,
    )
    assert set(report) == {
        "val_loss",
        "val_ppl",
        "unigram_loss",
        "copy_last_frame_loss",
        "copy_last_frame_eps",
        "val_loss_video_after_first_frame",
        "answer_loss_by_shot",
        "answer_first_token_loss_by_shot",
    }
    # The one paired sentence (32 tokens of 8-token images: 2 shots): y_1 is tokens 8..15, y_2 tokens 24..31.
    row = rows[1]
    assert report["answer_loss_by_shot"] == pytest.approx([row[7:15].mean(), row[23:31].mean()])
    assert report["answer_first_token_loss_by_shot"] == pytest.approx([row[7], row[23]])
    assert report["val_ppl"] == pytest.approx(math.exp(report["val_loss"]))


def test_answer_loss_by_shot_reads_each_answer_image():
    # Sentences x1 y1 x2 y2 of 2-token images: 8 tokens, targets 1..7 → rows of 7 losses.
    rows = [np.arange(7.0), np.arange(7.0) + 10]
    whole, first = answer_loss_by_shot(rows, tokens_per_image=2)
    # y1 = tokens 2, 3 → rows 1, 2; y2 = tokens 6, 7 → rows 5, 6; averaged over the two sentences.
    assert whole == pytest.approx([6.5, 10.5]) and first == pytest.approx([6.0, 10.0])

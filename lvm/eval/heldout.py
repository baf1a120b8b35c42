"""Held-out next-token loss of a model and of two reference predictors, on the same target tokens.

Every sentence (1-D token array) is scored on its targets 1..T−1, each predicted from the tokens before
it within the sentence. The baselines are fitted on training sentences only:
- unigram: token frequencies of the training data (add-α smoothed over the codebook);
- copy-last-frame (videos): the token at the same place in the previous frame, mixed with the unigram
  for the fraction ε of tokens that do change, ε fitted on training videos.

For analogy sentences (x1, y1, …, xk, yk) the model's loss on each answer y_j, and on its first token alone, is
reported per shot j: a model that infers the task from the examples predicts y_k better than y_1, most of all at
the first token, where nothing of y_j itself tells the task yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lvm.model.llama import LLaMA


def unigram_log_probs(train_sentences: Iterable[np.ndarray], num_codes: int, alpha: float = 0.5) -> np.ndarray:
    """Add-α smoothed log-frequencies (num_codes,) of every token in the training sentences."""
    counts = np.full(num_codes, alpha, dtype=np.float64)
    for tokens in train_sentences:
        counts += np.bincount(np.asarray(tokens, dtype=np.int64), minlength=num_codes)[:num_codes]
    return np.log(counts / counts.sum())


def unigram_nll(sentence: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
    """Per-target NLL (T−1,) of the unigram predictor."""
    return -log_probs[np.asarray(sentence[1:], dtype=np.int64)]


def copy_last_frame_nll(sentence: np.ndarray, tokens_per_image: int, log_probs: np.ndarray, eps: float) -> np.ndarray:
    """Per-target NLL (T − tokens_per_image,) for targets from the second frame on: −log((1−ε)·[x_t = x_{t−n}] +
    ε·p(x_t))."""
    tokens = np.asarray(sentence, dtype=np.int64)
    n = tokens_per_image
    same = tokens[n:] == tokens[:-n]
    return -np.log((1.0 - eps) * same + eps * np.exp(log_probs[tokens[n:]]))


def fit_copy_eps(train_videos: Sequence[np.ndarray], tokens_per_image: int, log_probs: np.ndarray) -> float:
    """ε minimising the copy-last-frame loss on training videos (a 1-D grid search in log space)."""
    grid = np.logspace(-4, 0, 81)[:-1]
    losses = [
        np.mean(np.concatenate([copy_last_frame_nll(s, tokens_per_image, log_probs, e) for s in train_videos]))
        for e in grid
    ]
    return float(grid[int(np.argmin(losses))])


@torch.inference_mode()
def model_nll(model: LLaMA, sentences: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
    """Per-target NLL (T−1,) of the model for each sentence (sentences of equal length are batched)."""
    model.eval()
    device = model.embed_tokens.weight.device
    out: list[np.ndarray | None] = [None] * len(sentences)
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(sentences):
        by_length.setdefault(len(s), []).append(i)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            ids = torch.as_tensor(np.stack([sentences[i] for i in chunk]).astype(np.int64), device=device)
            logits = model(ids[:, :-1]).float()
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            for i, row in zip(chunk, nll.cpu().numpy()):
                out[i] = row
    return out  # type: ignore[return-value]


def answer_loss_by_shot(model_rows: Sequence[np.ndarray], tokens_per_image: int) -> tuple[list[float], list[float]]:
    """(mean loss on each answer image y_j, mean loss on its first token), j = 1..k, over analogy sentences
    (x1, y1, …, xk, yk) given as per-target NLL rows (targets 1..T−1, so token p is row index p − 1)."""
    n = tokens_per_image
    shots = min(len(row) + 1 for row in model_rows) // (2 * n)
    whole, first = [], []
    for j in range(shots):
        start = n * (2 * j + 1) - 1  # row index of y_j's first token
        whole.append(float(np.mean([row[start : start + n] for row in model_rows])))
        first.append(float(np.mean([row[start] for row in model_rows])))
    return whole, first


def heldout_report(
    model: LLaMA,
    val_sentences: Sequence[np.ndarray],
    val_kinds: Sequence[str],
    train_sentences: Sequence[np.ndarray],
    train_kinds: Sequence[str],
    tokens_per_image: int,
    num_codes: int,
) -> dict[str, float]:
    """Model vs unigram on all held-out targets; model vs copy-last-frame on video targets after frame 1; the
    model's loss on each analogy answer by shot (`answer_loss_by_shot`)."""
    log_probs = unigram_log_probs(train_sentences, num_codes)
    model_rows = model_nll(model, val_sentences)
    val_loss = float(np.mean(np.concatenate(model_rows)))
    report = {
        "val_loss": val_loss,
        "val_ppl": math.exp(val_loss),
        "unigram_loss": float(np.mean(np.concatenate([unigram_nll(s, log_probs) for s in val_sentences]))),
    }
    videos = [i for i, kind in enumerate(val_kinds) if kind == "video"]
    train_videos = [s for s, kind in zip(train_sentences, train_kinds) if kind == "video"]
    if videos and train_videos:
        eps = fit_copy_eps(train_videos, tokens_per_image, log_probs)
        n = tokens_per_image
        # Model targets are positions 1..T−1; targets from the second frame on start at index n − 1.
        report["val_loss_video_after_first_frame"] = float(
            np.mean(np.concatenate([model_rows[i][n - 1 :] for i in videos]))
        )
        report["copy_last_frame_loss"] = float(
            np.mean(np.concatenate([copy_last_frame_nll(val_sentences[i], n, log_probs, eps) for i in videos]))
        )
        report["copy_last_frame_eps"] = eps
    paired = [model_rows[i] for i, kind in enumerate(val_kinds) if kind == "paired"]
    if paired:
        report["answer_loss_by_shot"], report["answer_first_token_loss_by_shot"] = answer_loss_by_shot(
            paired, tokens_per_image
        )
    return report

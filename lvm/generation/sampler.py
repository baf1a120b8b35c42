"""Drawing the next token from logits: temperature / top-k / top-p over the VQ codes only.

Only ids < `num_vq_codes` may ever be sampled (the original's EasyLM/models/llama/llama_model.py: every special id is
suppressed at generation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lvm.model.config import NUM_VQ_CODES


@dataclass
class SamplingConfig:
    """How next tokens are drawn. temperature 0 means greedy (argmax)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    num_vq_codes: int = NUM_VQ_CODES  # ids ≥ this are suppressed (specials, unused codes of a small codebook)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be ≥ 1 or None, got {self.top_k}")


def sample_next_tokens(
    logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Logits (B, V) → next token ids (B,) int64, drawn from the VQ codes only."""
    logits = logits[:, : sampling.num_vq_codes].float()  # suppressing ids ≥ num_vq_codes = never indexing them
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p; the most likely one always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)

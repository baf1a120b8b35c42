"""Token sampling for the LVM: KV-cached decoding, temperature / top-k / top-p, VQ-only vocabulary.

Only ids < `num_vq_codes` may ever be sampled (spec §2: every special id is suppressed at generation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lvm.model.config import NUM_VQ_CODES
from lvm.model.llama import LLaMA


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


@torch.inference_mode()
def generate_tokens(
    model: LLaMA,
    prompt: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
    use_kv_cache: bool = True,
) -> torch.Tensor:
    """Continue each prompt row (B, T) by `max_new_tokens` tokens → (B·n_candidates, max_new_tokens).

    Rows of the output are grouped by prompt: rows [i·n, (i+1)·n) are the candidates of prompt i.
    With `use_kv_cache=False` every step recomputes the full sequence (a reference for tests).
    """
    sampling = sampling or SamplingConfig()
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be (batch, length ≥ 1) token ids, got shape {tuple(prompt.shape)}")
    total = prompt.shape[1] + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(
            f"prompt of {prompt.shape[1]} + {max_new_tokens} new tokens exceeds the model's "
            f"max_seq_len {model.config.max_seq_len}; shorten the context"
        )
    tokens = prompt.repeat_interleave(n_candidates, dim=0).to(model.embed_tokens.weight.device)
    new_tokens = torch.empty(tokens.shape[0], max_new_tokens, dtype=torch.long, device=tokens.device)
    if not use_kv_cache:
        for i in range(max_new_tokens):
            logits = model(tokens, last_token_only=True)[:, -1]
            new_tokens[:, i] = sample_next_tokens(logits, sampling, generator)
            tokens = torch.cat([tokens, new_tokens[:, i : i + 1]], dim=1)
        return new_tokens

    model.setup_kv_cache(batch_size=tokens.shape[0], max_len=total)
    try:
        positions = torch.arange(total, device=tokens.device)
        logits = model(tokens, input_pos=positions[: tokens.shape[1]], last_token_only=True)[:, -1]
        for i in range(max_new_tokens):
            new_tokens[:, i] = sample_next_tokens(logits, sampling, generator)
            if i + 1 < max_new_tokens:
                pos = positions[prompt.shape[1] + i : prompt.shape[1] + i + 1]
                logits = model(new_tokens[:, i : i + 1], input_pos=pos)[:, -1]
    finally:
        model.clear_kv_cache()
    return new_tokens

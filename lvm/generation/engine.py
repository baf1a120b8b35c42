"""Batched, KV-cached decoding of VQ tokens: prompts of any lengths in, `max_new_tokens` per candidate out.

How a batch runs (the shapes stay fixed from the first decode step to the last, so the step compiles once):
- prompts are left-padded to the longest, P tokens; row b has p_b pad slots in front;
- one static cache of P + max_new_tokens slots per row is preallocated;
- the prefill writes slots 0 … P−1; each row's rotary positions start at 0 on its first real token,
  and no query ever sees a pad slot (a pad query sees only itself, so no row is all-masked);
- the prefilled rows are forked into `n_candidates` rows each (a prompt is prefilled once, not n times);
- every decode step writes one slot for all rows and samples from the VQ codes only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lvm.generation.sampler import SamplingConfig, sample_next_tokens
from lvm.model.llama import LLaMA

Prompts = torch.Tensor | Sequence[torch.Tensor]

# Inductor's own pass that turns a one-row matmul into a generated multiply-and-sum on CPU. At batch 1 a
# decode step is one pass over every weight; MKL's GEMV reads them at ~10 GB/s on this machine kind (AMD
# EPYC, 1 or 2 threads alike) while the generated reduction runs on every core: vqlm_100m's compiled step
# went from 56 to 37 ms in fp32 and from 31 to 21 ms in int8 (README, "Generation speed"). The pass leaves
# CUDA and batches > 1 alone (its CPU thresholds: one row, other dimensions ≤ 2048, so the head stays a GEMM).
DECODE_INDUCTOR_OPTIONS = {"post_grad_fusion_options": {"decompose_mm_pass": {}}}


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool "may attend" → 0 / −inf added to the scores. SDPA's CPU kernel runs a prefill faster with an
    additive mask than with a bool one (6.7 vs 10.2 ms for vqlm_debug's heads over 768 tokens, one thread)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def as_prompt_list(prompts: Prompts) -> list[torch.Tensor]:
    """A (B, T) tensor or a sequence of 1-D tensors → a list of 1-D int64 tensors, each non-empty."""
    rows = list(prompts.unbind(0)) if isinstance(prompts, torch.Tensor) and prompts.ndim == 2 else list(prompts)
    if not rows:
        raise ValueError("no prompts given")
    for i, row in enumerate(rows):
        if not isinstance(row, torch.Tensor) or row.ndim != 1 or row.numel() == 0 or row.is_floating_point():
            shape = tuple(row.shape) if isinstance(row, torch.Tensor) else type(row).__name__
            raise ValueError(f"prompt {i}: expected a non-empty 1-D tensor of token ids, got {shape}")
    return [row.long() for row in rows]


def decode_compile_kwargs(compile_options: dict[str, Any] | None) -> dict[str, Any]:
    """`torch.compile` keyword arguments of the decode step: the caller's, plus `DECODE_INDUCTOR_OPTIONS`
    under inductor without a `mode` (torch refuses `mode` and `options` together)."""
    kwargs = dict(compile_options or {})
    if kwargs.get("backend", "inductor") == "inductor" and kwargs.get("mode") is None:
        kwargs["options"] = {**DECODE_INDUCTOR_OPTIONS, **kwargs.get("options", {})}
    return kwargs


class GenerationEngine:
    """Writes token continuations with one `LLaMA` (eval mode, any device and dtype).

    `compile_decode=True` runs the one-token decode step through `torch.compile` (`compile_options` are
    its keyword arguments); the first call of each new batch shape pays the compilation. With the default
    backend and no `mode`, the step also gets `DECODE_INDUCTOR_OPTIONS` (an `options` entry overrides them).
    """

    def __init__(
        self, model: LLaMA, compile_decode: bool = False, compile_options: dict[str, Any] | None = None
    ) -> None:
        self.model = model.eval()
        self.decode_step: Callable[..., torch.Tensor] = self._decode_step
        if compile_decode:
            self.decode_step = torch.compile(self._decode_step, **decode_compile_kwargs(compile_options))

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def _decode_step(
        self, tokens: torch.Tensor, slot: torch.Tensor, position_ids: torch.Tensor, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        """One new token per row (B, 1) at cache slot `slot` (1,) → next-token logits (B, V)."""
        return self.model(tokens, input_pos=slot, position_ids=position_ids, attn_mask=attn_mask)[:, -1]

    @torch.inference_mode()
    def generate(
        self,
        prompts: Prompts,
        max_new_tokens: int,
        sampling: SamplingConfig | None = None,
        n_candidates: int = 1,
        generator: torch.Generator | None = None,
        use_kv_cache: bool = True,
    ) -> torch.Tensor:
        """Continue each prompt by `max_new_tokens` tokens → (B·n_candidates, max_new_tokens) int64 on the
        model's device. Rows are grouped by prompt: rows [i·n, (i+1)·n) are the candidates of prompt i.

        `use_kv_cache=False` recomputes every row on its own, unpadded, at every step: the slow reference
        that the cached, padded path is tested against.
        """
        sampling = sampling or SamplingConfig()
        rows = [row.to(self.device) for row in as_prompt_list(prompts)]
        if n_candidates < 1 or max_new_tokens < 1:
            raise ValueError(f"n_candidates and max_new_tokens must be ≥ 1, got {n_candidates} and {max_new_tokens}")
        longest = max(len(row) for row in rows)
        if longest + max_new_tokens > self.model.config.max_seq_len:
            raise ValueError(
                f"prompt of {longest} + {max_new_tokens} new tokens exceeds the model's max_seq_len "
                f"{self.model.config.max_seq_len}; shorten the context"
            )
        if not use_kv_cache:
            return self._generate_by_recomputation(rows, max_new_tokens, sampling, n_candidates, generator)
        return self._generate_cached(rows, max_new_tokens, sampling, n_candidates, generator)

    def _generate_cached(
        self,
        rows: list[torch.Tensor],
        max_new_tokens: int,
        sampling: SamplingConfig,
        n_candidates: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        device, model = self.device, self.model
        batch, prompt_len = len(rows), max(len(row) for row in rows)
        total = prompt_len + max_new_tokens
        pads = torch.tensor([prompt_len - len(row) for row in rows], device=device)
        tokens = torch.zeros(batch, prompt_len, dtype=torch.long, device=device)  # pad id 0: never attended
        for i, row in enumerate(rows):
            tokens[i, pads[i] :] = row
        slots = torch.arange(total, device=device)
        real = slots[None, :] >= pads[:, None]  # (B, total): slots holding a real token (or a future one)

        prefill_slots = slots[:prompt_len]
        causal = prefill_slots[:, None] >= slots[None, :]  # (P, total)
        own = prefill_slots[:, None] == slots[None, :]
        prefill_mask = (causal[None] & real[:, None]) | own[None]  # (B, P, total)
        positions = (prefill_slots[None, :] - pads[:, None]).clamp(min=0)

        dtype = model.embed_tokens.weight.dtype
        model.setup_kv_cache(batch_size=batch, max_len=total)
        try:
            logits = model(
                tokens,
                input_pos=prefill_slots,
                last_token_only=True,
                position_ids=positions,
                attn_mask=additive_mask(prefill_mask[:, None], dtype),
            )[:, -1]
            if n_candidates > 1:
                model.repeat_kv_cache_rows(n_candidates)
                logits = logits.repeat_interleave(n_candidates, dim=0)
                pads, real = pads.repeat_interleave(n_candidates), real.repeat_interleave(n_candidates, dim=0)
            new_tokens = torch.empty(batch * n_candidates, max_new_tokens, dtype=torch.long, device=device)
            for i in range(max_new_tokens):
                new_tokens[:, i] = sample_next_tokens(logits, sampling, generator)
                if i + 1 == max_new_tokens:
                    break
                slot = slots[prompt_len + i : prompt_len + i + 1]
                mask = additive_mask((real & (slots <= slot))[:, None, None, :], dtype)  # (B·n, 1, 1, total)
                logits = self.decode_step(new_tokens[:, i : i + 1], slot, (slot - pads)[:, None], mask)
        finally:
            model.clear_kv_cache()
        return new_tokens

    def _generate_by_recomputation(
        self,
        rows: list[torch.Tensor],
        max_new_tokens: int,
        sampling: SamplingConfig,
        n_candidates: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        # Same draw order as the cached path: at each step, one draw for all rows together.
        sequences = [row for row in rows for _ in range(n_candidates)]
        new_tokens = torch.empty(len(sequences), max_new_tokens, dtype=torch.long, device=self.device)
        for i in range(max_new_tokens):
            logits = torch.cat([self.model(seq[None], last_token_only=True)[:, -1] for seq in sequences])
            new_tokens[:, i] = sample_next_tokens(logits, sampling, generator)
            sequences = [torch.cat([seq, new_tokens[j, i : i + 1]]) for j, seq in enumerate(sequences)]
        return new_tokens

"""The LVM decoder: LLaMA-1 as EasyLM trains it and Hugging Face's `LlamaForCausalLM` runs it.

Read top to bottom: RMSNorm → rotary embeddings → KV cache → attention → MLP → block → LLaMA.
Parameter names follow `LlamaForCausalLM` (minus its `model.` prefix) so checkpoints convert by renaming
only. Parallelism (FSDP, activation checkpointing, compile) is applied from outside, never here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lvm.model.config import ModelConfig

try:  # Optional CUDA kernel; SDPA is the default everywhere and the only path the tests take.
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_func = None


class RMSNorm(nn.Module):
    """x / rms(x) · weight over the last dim, computed in fp32 (as HF LLaMA does). (..., d) → (..., d)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables in HF's half-split layout: cos, sin of shape (seq_len, head_dim), fp32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, Dh) by position tables (T, Dh), or (B, 1, T, Dh) when rows sit at different
    positions: x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class KVCache(nn.Module):
    """Preallocated keys and values of one attention layer, (B, H, max_len, Dh) each."""

    def __init__(self, batch_size: int, num_heads: int, max_len: int, head_dim: int, dtype, device) -> None:
        super().__init__()
        shape = (batch_size, num_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, H, T, Dh) at slots `input_pos` (T,) and return the whole cache."""
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v

    def repeat_rows(self, repeats: int) -> None:
        """Row b becomes rows b·repeats … (b+1)·repeats − 1: candidates share their prompt's prefill."""
        self.k = self.k.repeat_interleave(repeats, dim=0)
        self.v = self.v.repeat_interleave(repeats, dim=0)


class Attention(nn.Module):
    """Multi-head causal self-attention with rotary q/k, no biases. (B, T, d) → (B, T, d)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, self.num_heads, self.head_dim = config.hidden_size, config.num_heads, config.head_dim
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = (
            proj(x).view(B, T, self.num_heads, self.head_dim) for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        if mask is None and flash_attn_func is not None and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            # flash-attn wants (B, T, H, Dh); rotate in that layout by moving T next to Dh temporarily.
            q = apply_rope(q.transpose(1, 2), cos, sin).transpose(1, 2)
            k = apply_rope(k.transpose(1, 2), cos, sin).transpose(1, 2)
            y = flash_attn_func(q, k, v, causal=True)
            return self.o_proj(y.reshape(B, T, d))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) · up(x)). (B, T, d) → (B, T, d)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask=None, input_pos=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, input_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class LLaMA(nn.Module):
    """Token ids (B, T) int64 → next-token logits (B, T, vocab) in the activations' dtype."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.image_positions:
            self.embed_image_positions = nn.Embedding(config.image_positions, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.register_buffer("cache_mask", torch.empty(0, dtype=torch.bool), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """normal(0, init_std) for every matrix, ones for norms; rebuilds the rotary tables.

        Also the way to materialise a model built on the meta device after `to_empty(device=...)`.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        device = self.embed_tokens.weight.device
        cos, sin = rope_cos_sin(self.config.max_seq_len, self.config.head_dim, self.config.rope_theta, device)
        self.rope_cos, self.rope_sin = cos, sin

    # ---- KV cache for generation -------------------------------------------------------------
    def setup_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> None:
        """Preallocate every layer's cache for `batch_size` rows of up to `max_len` positions."""
        max_len = max_len or self.config.max_seq_len
        if max_len > self.config.max_seq_len:
            raise ValueError(f"KV cache of {max_len} positions exceeds max_seq_len {self.config.max_seq_len}")
        device, dtype = self.embed_tokens.weight.device, dtype or self.embed_tokens.weight.dtype
        for layer in self.layers:
            attn = layer.self_attn
            attn.kv_cache = KVCache(batch_size, attn.num_heads, max_len, attn.head_dim, dtype, device)
        self.cache_mask = torch.ones(max_len, max_len, dtype=torch.bool, device=device).tril()

    def repeat_kv_cache_rows(self, repeats: int) -> None:
        """Fork every cached row into `repeats` identical rows (after a prefill, before sampling)."""
        for layer in self.layers:
            layer.self_attn.kv_cache.repeat_rows(repeats)

    def clear_kv_cache(self) -> None:
        for layer in self.layers:
            layer.self_attn.kv_cache = None
        self.cache_mask = torch.empty(0, dtype=torch.bool, device=self.cache_mask.device)

    @property
    def has_kv_cache(self) -> bool:
        return self.cache_mask.numel() > 0

    # ---- forward -------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        last_token_only: bool = False,
        position_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """With a KV cache set up, `input_pos` (T,) are the cache slots `input_ids` fill (required).
        Left-padded batches also pass `position_ids` (B, T), each row's rotary positions, and
        `attn_mask` (B, 1, T, cache_len) bool, the slots each query may see; by default every row's
        positions are its slots and attention is causal over the cache."""
        T = input_ids.shape[1]
        positions = None  # each token's place in its sequence, where it is not simply 0 … T−1
        if self.has_kv_cache:
            if input_pos is None:
                raise ValueError("a KV cache is set up: pass input_pos (the cache slots of input_ids)")
            if position_ids is None:
                positions = input_pos
                cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
            else:
                positions = position_ids
                cos, sin = self.rope_cos[position_ids][:, None], self.rope_sin[position_ids][:, None]
            mask = self.cache_mask[input_pos][None, None] if attn_mask is None else attn_mask
        else:
            if T > self.config.max_seq_len:
                raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {self.config.max_seq_len}")
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
            mask = None
        x = self.embed_tokens(input_ids)
        if self.config.image_positions:
            # Rotary angles only tell tokens apart by distance; this says where in its image a token sits, so
            # the last token of an image knows the next one starts a new image (README, "Why the answers drifted").
            if positions is None:
                positions = torch.arange(T, device=input_ids.device)
            x = x + self.embed_image_positions(positions % self.config.image_positions)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, input_pos)
        x = self.norm(x)
        if last_token_only:
            x = x[:, -1:]
        return self.lm_head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

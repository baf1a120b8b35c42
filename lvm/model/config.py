"""Model dimensions of the LVM LLaMA decoders and the size table of the original (EasyLM `vqlm_*`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# 8192 VQ codes (ids 0..8191) + 100 reserved special ids (8192..8291); training data holds no specials.
NUM_VQ_CODES = 8192
RESERVED_IDS = 100
VOCAB_SIZE = NUM_VQ_CODES + RESERVED_IDS  # 8292


@dataclass(frozen=True)
class ModelConfig:
    """Dimensions of one LLaMA-1 decoder (pre-norm RMSNorm, rotary, SwiGLU, untied head)."""

    name: str = "custom"
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    vocab_size: int = VOCAB_SIZE
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    # 0: the original (rotary positions only). N > 0: ours, a learned embedding of each token's index within
    # its image (position mod N, N = tokens per image) added to the token embedding (LLaMA.forward).
    image_positions: int = 0

    def __post_init__(self) -> None:
        if self.image_positions < 0:
            raise ValueError(f"model '{self.name}': image_positions must be >= 0, got {self.image_positions}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model '{self.name}': hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"model '{self.name}': head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_parameters(self) -> int:
        """Closed form of the original, 2·V·d + L·(4d² + 3d·f + 2d) + d, plus the image-position table."""
        d, f, L, V = self.hidden_size, self.intermediate_size, self.num_layers, self.vocab_size
        return 2 * V * d + L * (4 * d * d + 3 * d * f + 2 * d) + d + self.image_positions * d

    def flops_per_token(self, seq_len: int | None = None, causal: bool = False) -> int:
        """Training FLOPs (forward + backward) per token at sequence length T: 6·N for the weights
        plus 12·L·d·T for attention scores and values (the PaLM appendix). `causal=True` halves the
        attention term to 6·L·d·T, the work a causal kernel actually does (the upper triangle is skipped)."""
        seq_len = seq_len or self.max_seq_len
        attention = 12 * self.num_layers * self.hidden_size * seq_len
        return 6 * self.num_parameters + (attention // 2 if causal else attention)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_name(cls, name: str, **overrides) -> ModelConfig:
        if name not in SIZES:
            raise ValueError(f"unknown model size '{name}'; expected one of {sorted(SIZES)}")
        return replace(SIZES[name], **overrides)


def _size(name: str, d: int, f: int, layers: int, heads: int) -> ModelConfig:
    return ModelConfig(name=name, hidden_size=d, intermediate_size=f, num_layers=layers, num_heads=heads)


# Exact dimensions of EasyLM's llama_model.py `vqlm_*` configs (the original's EasyLM/models/llama/llama_model.py).
SIZES: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        _size("vqlm_debug", 128, 256, 2, 4),
        _size("vqlm_100m", 640, 1664, 22, 10),
        _size("vqlm_300m", 1024, 2688, 22, 8),
        _size("vqlm_600m", 1536, 4096, 22, 16),
        _size("vqlm_1b", 2048, 5504, 22, 16),
        _size("vqlm_3b", 3200, 8640, 26, 32),
        _size("vqlm_7b", 4096, 11008, 32, 32),
        _size("vqlm_13b", 5120, 13824, 40, 40),
        _size("vqlm_20b", 6144, 16128, 46, 48),
        _size("vqlm_30b", 6656, 17920, 60, 52),
    )
}

"""int8 weight-only quantization for inference: each `nn.Linear` of the decoder blocks and the head keeps
its weight as int8 with one fp scale per output channel (absmax / 127), and its matmul reads those int8
bytes, about a quarter of fp32's. Decoding one token is a pass over every weight (batch 1 is
memory-bound), so fewer bytes read is a faster step; gpt-fast measured the same on GPUs.

On CPU the matmul is torch's packed int8 kernel `aten._weight_int8pack_mm`, fed bf16 activations: with
bf16 it reads int8 weights at memory speed, with fp32 activations it was several times slower than fp32
`F.linear` on this machine, and so was torchao 0.18's `Int8WeightOnlyConfig` (README, "Generation
speed"). Elsewhere (CUDA) the weight is dequantized into the activations' dtype before `F.linear`:
correct, not tuned, and not run here. The embedding stays in full precision: a lookup reads one row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZE_MODES = (None, "int8")


class Int8WeightOnlyLinear(nn.Module):
    """y = x · (scales ⊙ weight_int8)ᵀ (+ bias): weight int8 (out, in), scales (out,) per output channel."""

    def __init__(self, weight_int8: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight_int8.dtype != torch.int8 or weight_int8.ndim != 2 or scales.shape != weight_int8.shape[:1]:
            raise ValueError(
                f"Int8WeightOnlyLinear: expected an int8 (out, in) weight and (out,) scales, got "
                f"{weight_int8.dtype} {tuple(weight_int8.shape)} and {tuple(scales.shape)}"
            )
        self.in_features, self.out_features = weight_int8.shape[1], weight_int8.shape[0]
        self.register_buffer("weight_int8", weight_int8.contiguous())
        # bf16 scales: what the CPU kernel takes with bf16 activations (8 significant bits, as the int8 grid).
        self.register_buffer("scales", scales.to(torch.bfloat16).contiguous())
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightOnlyLinear:
        """Quantize `linear`'s weight per output channel: scale = max |row| / 127, int8 = round(w / scale)."""
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        weight_int8 = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(weight_int8, scales, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales)
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.weight_int8.to(x.dtype)) * self.scales.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def quantize_model(model: nn.Module, mode: str | None, keep: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Quantize `model` in place for inference and return it. `mode`: None (unchanged) or "int8": every
    `nn.Linear` becomes an `Int8WeightOnlyLinear`, except the modules named in `keep`. The head stays in
    full precision by default: on the demo's LVM, int8 everywhere changed the top-1 next token at 4.1 % of
    held-out positions, int8 blocks with an fp32 head at 1.4 % (nearly all near-ties; README)."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize: {mode!r} is not one of {list(QUANTIZE_MODES)} (null for none)")
    if mode is None:
        return model
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full_name = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full_name not in keep:
                setattr(module, child_name, Int8WeightOnlyLinear.from_linear(child))
    return model.eval()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict (parameters and persistent buffers; int8 weights and their scales
    included): what a GPU or the page cache must hold, and what one decode step reads."""
    return sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())

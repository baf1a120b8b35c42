"""The optimisation recipes: the original's (the original's EasyLM/optimizers.py: AdamW on every parameter, warmup
then cosine to end_lr), and ours, Muon on the decoder blocks' weight matrices with AdamW on the rest."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.tensor import DTensor


def parameter_groups(model: nn.Module, weight_decay: float, exclude_norms_and_embeddings: bool = False) -> list[dict]:
    """AdamW parameter groups. The original decays every parameter (its exclusion list is empty);
    `exclude_norms_and_embeddings=True` gives the common GPT-style alternative for ablations."""
    if not exclude_norms_and_embeddings:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (decay if isinstance(module, nn.Linear) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine_lr(step: int, peak_lr: float, end_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """lr(t) = peak·t/W (t < W); end + (peak − end)·½(1 + cos(π(t − W)/(D − W))) (W ≤ t < D); end after.

    `decay_steps` counts from step 0, warmup included, as in EasyLM.
    """
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    if step >= decay_steps:
        return end_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return end_lr + (peak_lr - end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int, end_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_cosine_lr` per optimizer step, with each group's initial lr as the peak."""
    if decay_steps < warmup_steps:
        raise ValueError(f"scheduler: decay_steps {decay_steps} must be ≥ warmup_steps {warmup_steps}")

    def factor_for(peak: float) -> Callable[[int], float]:
        return lambda step: warmup_cosine_lr(step, peak, end_lr, warmup_steps, decay_steps) / peak

    peaks = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(peak) for peak in peaks])


def build_adamw(
    model: nn.Module,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    exclude_norms_and_embeddings: bool = False,
) -> torch.optim.AdamW:
    """AdamW with the original's defaults (b2 0.95, eps 1e-8, decay 0.1 on every parameter)."""
    groups = parameter_groups(model, weight_decay, exclude_norms_and_embeddings)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def newton_schulz_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype Muon orthogonalizes in: "bfloat16", "float32", or "auto" — bfloat16 (torch's choice) on
    accelerators and on CPUs with bf16 matmul units, float32 on other CPUs. There torch's bf16 matmuls are
    emulated: a step on the demo's 28 matrices took 340 ms in bf16 and 27 ms in fp32 on an AMD EPYC
    (AVX2) host, which made its LVM stage 4 times slower (README, "Muon")."""
    choices = {"bfloat16": torch.bfloat16, "float32": torch.float32}
    if name == "auto":
        cpu_without_bf16 = device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return torch.float32 if cpu_without_bf16 else torch.bfloat16
    if name not in choices:
        raise ValueError(f"optimizer.ns_dtype: {name!r} is not one of auto, bfloat16, float32")
    return choices[name]


def orthogonalize(
    g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """Muon's quintic Newton–Schulz iteration on G/‖G‖_F (Jordan et al., 2024), the update matrix of
    `torch.optim.Muon` computed in `dtype`: ≈ U·S'·Vᵀ with S' near 1, for G = U·S·Vᵀ."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x  # iterate on the wide side: the Gram matrix is the smaller one
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def muon_step_size(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """The lr a matrix of `shape` steps by: Keller Jordan's √max(1, rows/cols)·lr ("original", torch's default)
    or Moonshot's 0.2·√max(rows, cols)·lr ("match_rms_adamw"), as `torch.optim.Muon` scales it."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


class Muon(torch.optim.Muon):
    """`torch.optim.Muon` with its Newton–Schulz steps in `ns_dtype`. torch's own step always orthogonalizes in
    bfloat16; with `ns_dtype=torch.bfloat16` this class takes that step unchanged, with another dtype it takes the
    same update (momentum, Nesterov, decoupled decay, the lr adjustment of `adjust_lr_fn`) with `orthogonalize`."""

    def __init__(self, params, ns_dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        if self.ns_dtype == torch.bfloat16:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"].lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-muon_step_size(group["lr"], group["adjust_lr_fn"], p.shape))
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on some parameters and AdamW on the others, as one optimizer: Lightning's automatic optimization
    and the lr schedulers take one. Both halves are torch's (`torch.optim.AdamW`, and `torch.optim.Muon` through
    `Muon`, which only picks the dtype of its Newton–Schulz steps); this class only routes. Its `param_groups` are
    the halves' own group dicts, so a scheduler that sets a group's lr here sets it where the step reads it;
    `state_dict` holds both halves' states."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        self._routing = False  # torch's __init__ adds the halves' groups through add_param_group: keep them as they are
        super().__init__([*muon.param_groups, *adamw.param_groups], {})
        self._routing = True

    def add_param_group(self, param_group: dict) -> None:
        """A new group goes to AdamW (any shape), or to Muon with `"muon": True` (2-D matrices only), e.g. the
        layers a finetuning callback unfreezes (Lightning's BaseFinetuning adds them here)."""
        if not self._routing:
            return super().add_param_group(param_group)
        group = dict(param_group)
        if not isinstance(group["params"], set):  # a set is torch's to refuse (its order is not defined)
            params = group["params"]
            group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in known for p in group["params"]):
            raise ValueError("MuonWithAdamW.add_param_group: a parameter is already in a parameter group")
        (self.muon if group.pop("muon", False) else self.adamw).add_param_group(group)
        self.param_groups = [*self.muon.param_groups, *self.adamw.param_groups]

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # Loading gives each half new group dicts: point at them again, or a scheduler would set lrs nobody reads.
        self.param_groups = [*self.muon.param_groups, *self.adamw.param_groups]


def muon_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's, AdamW's): the weight matrices of the `nn.Linear` layers inside `model.layers` (the decoder
    blocks) for Muon; the embeddings, the output head and the norm gains for AdamW, as Muon's authors do."""
    if not isinstance(getattr(model, "layers", None), nn.Module):
        raise ValueError(f"build_muon: expected a model with decoder blocks in .layers, got {type(model).__name__}")
    hidden = {id(m.weight): m.weight for m in model.layers.modules() if isinstance(m, nn.Linear)}
    rest = [p for p in model.parameters() if id(p) not in hidden]
    return [p for p in hidden.values() if p.requires_grad], [p for p in rest if p.requires_grad]


def build_muon(
    model: nn.Module,
    lr: float,
    muon_lr: float = 0.02,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    adjust_lr_fn: str = "original",
    ns_dtype: str = "auto",
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    weight_decay: float = 0.1,
) -> MuonWithAdamW:
    """Muon (Jordan et al., 2024: momentum, then the update matrix orthogonalized by Newton–Schulz steps) at
    `muon_lr` on the decoder blocks' weight matrices; AdamW at `lr` on the rest (`muon_parameters`). Both
    decay by `weight_decay`. The scheduler warms each group up to its own peak, then decays it to `end_lr`.
    `ns_dtype` is the dtype of the Newton–Schulz steps (`newton_schulz_dtype`).

    Muon orthogonalizes whole matrices, which `torch.optim.Muon` cannot do on FSDP shards: a model whose
    weights are DTensors is refused (train it with DDP, or with `optimizer=adamw`)."""
    hidden, rest = muon_parameters(model)
    if any(isinstance(p, DTensor) for p in hidden):
        raise ValueError(
            "build_muon: the decoder's weight matrices are sharded (FSDP); Muon orthogonalizes whole matrices, "
            "which torch.optim.Muon does not do across shards. Use strategy=ddp, or optimizer=adamw."
        )
    muon = Muon(
        hidden,
        ns_dtype=newton_schulz_dtype(ns_dtype, hidden[0].device if hidden else torch.device("cpu")),
        lr=muon_lr,
        weight_decay=weight_decay,
        momentum=momentum,
        nesterov=nesterov,
        ns_steps=ns_steps,
        adjust_lr_fn=adjust_lr_fn,
    )
    adamw = torch.optim.AdamW(rest, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    return MuonWithAdamW(muon, adamw)

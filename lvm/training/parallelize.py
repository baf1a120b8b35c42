"""Parallelism and memory savings applied to the decoder from outside, in torchtitan's order
(torchtitan/models/llama3/parallelize.py): activation checkpointing, then torch.compile, then FSDP.
Each step wraps what the one before made: the compiled blocks are the checkpointed ones, and FSDP
shards the compiled blocks. The model itself (`lvm/model/llama.py`) knows none of this."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from lvm.model.llama import LLaMA


def apply_activation_checkpointing(model: LLaMA) -> None:
    """Recompute each decoder block in the backward pass instead of keeping its activations (memory for
    ~1/3 more compute; the same numbers). torch's `checkpoint_wrapper` (non-reentrant
    `torch.utils.checkpoint`), as torchtitan uses; its state-dict hooks keep parameter names unchanged."""
    for index, block in enumerate(model.layers):
        model.layers[index] = checkpoint_wrapper(block)


def apply_compile(model: LLaMA, options: Mapping[str, Any]) -> None:
    """`torch.compile` each decoder block in place (`Module.compile`), so parameter names and checkpoints
    are unchanged; one compiled graph is reused by every block of the same shape."""
    for block in model.layers:
        block.compile(**options)


def parallelize(
    model: LLaMA,
    activation_checkpointing: bool = False,
    compile_options: Mapping[str, Any] | None = None,
    shard: Callable[[LLaMA], None] | None = None,
) -> None:
    """Activation checkpointing (when asked) → compile (when `compile_options` is not None) → `shard`
    (e.g. `FSDP2Strategy.shard`, when given). Call once per model."""
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile_options is not None:
        apply_compile(model, compile_options)
    if shard is not None:
        shard(model)

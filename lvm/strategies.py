"""Lightning strategies built for our model; parallelism stays here, never inside `lvm/model`."""

from __future__ import annotations

from pytorch_lightning.strategies import FSDPStrategy

from lvm.model.llama import Block


def fsdp_strategy(
    sharding_strategy: str = "FULL_SHARD",
    state_dict_type: str = "sharded",
    activation_checkpointing: bool = False,
    cpu_offload: bool = False,
) -> FSDPStrategy:
    """FSDP with each decoder `Block` as one unit (the granularity of the original's FSDP mesh axis).

    Made here rather than in YAML because Lightning wants the wrap policy as a set of classes,
    which a config file cannot spell.
    """
    return FSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
    )

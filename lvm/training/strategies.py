"""Lightning strategies built for our model; parallelism stays here, never inside `lvm/model`.

FSDP2 (`torch.distributed.fsdp.fully_shard`) through Lightning's `ModelParallelStrategy`, rather than
FSDP1's `FSDPStrategy`: parameters are DTensors sharded per parameter (no flat buffers), so the
optimizer, gradient clipping and state dicts see ordinary named parameters; checkpoints are
torch.distributed.checkpoint folders that reload on a different number of devices; the same device
mesh extends to tensor parallelism later; and it is what torchtitan trains LLaMA with.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from lvm.core.atomic_files import replace_directory, resolve_directory
from lvm.model.llama import LLaMA

_DTYPES = {None: None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FSDP2Strategy(ModelParallelStrategy):
    """Fully sharded data parallel over every device of every node; each decoder block is one unit.

    Args:
        param_dtype: dtype parameters are all-gathered and computed in ("bfloat16" halves the
            communication; null keeps fp32 and leaves compute precision to `trainer.precision`).
        reduce_dtype: dtype of the gradient reduce-scatter (null: `param_dtype`).
        reshard_after_forward: free the gathered block after its forward (ZeRO-3; False = ZeRO-2,
            more memory, one all-gather fewer per block in the backward).
        save_distributed_checkpoint: one shard file per rank (a folder) instead of a single file
            assembled on rank 0.
    """

    def __init__(
        self,
        param_dtype: str | None = None,
        reduce_dtype: str | None = None,
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = True,
        **kwargs: Any,
    ) -> None:
        for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value not in _DTYPES:
                raise ValueError(
                    f"FSDP2Strategy: {name} must be one of {sorted(filter(None, _DTYPES))} or null, not {value!r}"
                )
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )
        self.mixed_precision = MixedPrecisionPolicy(
            param_dtype=_DTYPES[param_dtype], reduce_dtype=_DTYPES[reduce_dtype or param_dtype]
        )
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        # Pure FSDP: one data-parallel mesh dimension over all processes (the parent's "auto" would
        # shard over nodes only and use the devices of a node for tensor parallelism).
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def shard(self, model: LLaMA) -> None:
        """Apply `fully_shard` to each decoder block, then to the rest (embeddings, final norm, head)."""
        if isinstance(model, FSDPModule):  # configure_model runs again for validate/test after fit
            return
        mesh = self.device_mesh["data_parallel"]
        for block in model.layers:
            fully_shard(
                block, mesh=mesh, mp_policy=self.mixed_precision, reshard_after_forward=self.reshard_after_forward
            )
        # The root's parameters are needed again right after the forward (the head in the loss), so
        # they stay gathered.
        fully_shard(model, mesh=mesh, mp_policy=self.mixed_precision, reshard_after_forward=False)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write the checkpoint folder beside its target, then swap it in: a kill mid-save keeps the old one."""
        if not self._save_distributed_checkpoint:  # one file, made atomic by the CheckpointIO plugin
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        target = Path(self.broadcast(str(filepath)))
        temporary = target.with_name(f".{target.name}.tmp")
        if self.global_rank == 0 and temporary.exists():  # left by a save that was killed
            shutil.rmtree(temporary)
        self.barrier()
        super().save_checkpoint(checkpoint, temporary, storage_options)
        self.barrier()  # every rank has written its shard
        if self.global_rank == 0:
            replace_directory(temporary, target)
        self.barrier()

    def load_checkpoint(self, checkpoint_path: str | os.PathLike, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.global_rank == 0 and self._save_distributed_checkpoint:
            resolve_directory(Path(checkpoint_path))
        self.barrier()
        return super().load_checkpoint(checkpoint_path, *args, **kwargs)

"""Pretrained LVM weights from disk, in any of the three forms a run can meet them:

- one of our Lightning checkpoints: a `.ckpt` file (keys `model.<name>`);
- one of our FSDP2 checkpoints: a torch.distributed.checkpoint folder (`meta.pt` + `*.distcp`);
- a Hugging Face `LlamaForCausalLM` folder (`config.json` + `model.safetensors`, a sharded
  `model.safetensors.index.json`, or `pytorch_model.bin`), as the released LVM 7B is published.

This module tells the three apart; `lvm.interop.hf` reads (streams) and writes Hugging Face folders.
Our parameter names are Hugging Face's without the `model.` prefix, so no tensor is permuted.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lvm.core.weights import load_torch_file
from lvm.generation.quantize import quantize_model
from lvm.interop.hf import (
    check_weights_fit,
    export_hf,
    is_hf_folder,
    load_hf_into,
    model_config_from_hf,
    read_hf_state_dict,
)
from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA


def _read_lightning_state_dict(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    if path.is_dir():  # FSDP2 folder: fill a template of full tensors, one per parameter
        import torch.distributed.checkpoint as dcp

        template = {f"model.{name}": tensor.detach().clone() for name, tensor in model.state_dict().items()}
        wrapped = {"state_dict": template}
        dcp.load(wrapped, checkpoint_id=str(path))
        state = wrapped["state_dict"]
    else:  # memory-mapped: the tensors are read from disk as they are copied, not all at once
        state = _read_ckpt(path).get("state_dict")
        if state is None:
            raise ValueError(f"{path}: no 'state_dict' field; is this a Lightning checkpoint of lvm.train?")
    return {name.removeprefix("model."): tensor for name, tensor in state.items() if name.startswith("model.")}


def _read_ckpt(path: Path) -> dict:
    """A Lightning checkpoint, memory-mapped (tensors are read from disk when touched)."""
    checkpoint = load_torch_file(path, mmap=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: holds a {type(checkpoint).__name__}, not a Lightning checkpoint (a dict)")
    return checkpoint


def read_pretrained_state_dict(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights at `path` (a .ckpt, an FSDP2 folder or a Hugging Face folder) under our names."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"init_from: {path} does not exist")
    if is_hf_folder(path):
        return read_hf_state_dict(path)
    return _read_lightning_state_dict(path, model)


def load_pretrained_into(model: nn.Module, path: str | Path) -> None:
    """Copy pretrained weights into `model` (cast to its dtype); any missing, extra or mis-shaped
    tensor is an error that names the file and the tensors. A Hugging Face folder is streamed tensor by
    tensor (`lvm.interop.hf.load_hf_into`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"init_from: {path} does not exist")
    if is_hf_folder(path):
        load_hf_into(model, path)
        return
    state = _read_lightning_state_dict(path, model)
    check_weights_fit(
        path,
        {name: (tuple(tensor.shape), path.name) for name, tensor in state.items()},
        {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()},
    )
    model.load_state_dict(state)


def read_model_config(path: str | Path) -> ModelConfig:
    """The dimensions of the model stored at `path`: a Hugging Face folder's config.json, or the
    `model_config` hyperparameters of one of our Lightning `.ckpt` files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        if (path / "config.json").exists():
            return model_config_from_hf(path)
        raise ValueError(
            f"{path}: a folder without config.json. Sharded FSDP2 checkpoints hold no model "
            "dimensions; load them with init_from= in lvm.train, or export a Hugging Face folder"
        )
    hparams = _read_ckpt(path).get("hyper_parameters") or {}
    if "model_config" not in hparams:
        raise ValueError(f"{path}: no hyper_parameters.model_config; is this a checkpoint written by lvm.train?")
    return ModelConfig(**hparams["model_config"])


def allocate_model(
    config: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LLaMA:
    """A LLaMA whose parameters are allocated once, directly on `device` in `dtype` (built on the meta
    device, then materialised and initialised): a model to load weights into without a second copy."""
    with torch.device("meta"):
        model = LLaMA(config)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.init_weights()
    return model


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, quantize: str | None = None
) -> LLaMA:
    """An eval-mode LLaMA with the weights at `path` (our `.ckpt` or a Hugging Face folder), on `device`
    in `dtype` (default: fp32), quantized for inference when `quantize` says so (None or "int8":
    `lvm.generation.quantize.quantize_model`)."""
    model = allocate_model(read_model_config(path), device, dtype or torch.float32)
    load_pretrained_into(model, path)
    return quantize_model(model, quantize).eval()


def save_model_checkpoint(model: LLaMA, path: str | Path) -> Path:
    """Write `model` as a weights-only checkpoint in our `.ckpt` layout (`state_dict` with `model.<name>`
    keys, `hyper_parameters.model_config`), which `load_model`, `read_model_config` and `lvm.train`'s
    `init_from` read. Written to a temporary file beside `path`, then moved onto it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": {f"model.{name}": tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "hyper_parameters": {"model_config": model.config.to_dict()},
    }
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def export_checkpoint_to_hf(
    checkpoint: str | Path, folder: str | Path, dtype: torch.dtype = torch.bfloat16, max_shard_size: int | str = "5GB"
) -> Path:
    """`export_hf` of the model stored in one of our `.ckpt` files (or any path `load_model` reads),
    loaded straight into `dtype`."""
    return export_hf(load_model(checkpoint, dtype=dtype), folder, dtype=dtype, max_shard_size=max_shard_size)

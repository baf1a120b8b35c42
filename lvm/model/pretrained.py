"""Pretrained LVM weights from disk, in any of the three forms a run can meet them:

- one of our Lightning checkpoints: a `.ckpt` file (keys `model.<name>`);
- one of our FSDP2 checkpoints: a torch.distributed.checkpoint folder (`meta.pt` + `*.distcp`);
- a Hugging Face `LlamaForCausalLM` folder (`config.json` + `model.safetensors`, a sharded
  `model.safetensors.index.json`, or `pytorch_model.bin`), as the released LVM 7B is published.

Our parameter names are Hugging Face's without the `model.` prefix, so no tensor is permuted.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA

HF_CONFIG_FIELDS = {  # ours → LlamaConfig's
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "vocab_size": "vocab_size",
    "max_seq_len": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "norm_eps": "rms_norm_eps",
}


def model_config_from_hf(path: str | Path) -> ModelConfig:
    """ModelConfig from a Hugging Face folder's config.json, refusing what our model does not have."""
    config_file = Path(path) / "config.json"
    hf = json.loads(config_file.read_text())
    missing = [hf_name for hf_name in HF_CONFIG_FIELDS.values() if hf_name not in hf and hf_name != "rope_theta"]
    if missing:
        raise ValueError(f"{config_file}: missing field(s) {missing} of a LlamaConfig")
    kv_heads = hf.get("num_key_value_heads") or hf["num_attention_heads"]
    if kv_heads != hf["num_attention_heads"]:
        raise ValueError(f"{config_file}: num_key_value_heads {kv_heads} != num_attention_heads "
                         f"{hf['num_attention_heads']}; LVM models use plain multi-head attention")
    if hf.get("tie_word_embeddings"):
        raise ValueError(f"{config_file}: tie_word_embeddings is true; LVM models have an untied head")
    rope_theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    values = {ours: hf[theirs] for ours, theirs in HF_CONFIG_FIELDS.items() if theirs in hf}
    values["rope_theta"] = float(rope_theta)
    return ModelConfig(name=Path(path).name, **values)


def _hf_weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not weight_map:
                raise ValueError(f"{index}: no 'weight_map' field naming the shard of each tensor")
            return [folder / name for name in sorted(set(weight_map.values()))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return [folder / name]
    raise FileNotFoundError(f"{folder}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")


def read_hf_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face LlamaForCausalLM folder, renamed to our parameter names."""
    tensors: dict[str, torch.Tensor] = {}
    for file in _hf_weight_files(Path(folder)):
        if file.suffix == ".safetensors":
            tensors.update(load_file(file))
        else:
            tensors.update(torch.load(file, map_location="cpu", weights_only=True))
    return {name.removeprefix("model."): tensor for name, tensor in tensors.items()
            if not name.endswith("rotary_emb.inv_freq")}  # a buffer some exports include; we rebuild it


def _read_lightning_state_dict(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    if path.is_dir():  # FSDP2 folder: fill a template of full tensors, one per parameter
        import torch.distributed.checkpoint as dcp

        template = {f"model.{name}": tensor.detach().clone() for name, tensor in model.state_dict().items()}
        wrapped = {"state_dict": template}
        dcp.load(wrapped, checkpoint_id=str(path))
        state = wrapped["state_dict"]
    else:
        state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict")
        if state is None:
            raise ValueError(f"{path}: no 'state_dict' field; is this a Lightning checkpoint of lvm.train?")
    return {name.removeprefix("model."): tensor for name, tensor in state.items() if name.startswith("model.")}


def read_pretrained_state_dict(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights at `path` (a .ckpt, an FSDP2 folder or a Hugging Face folder) under our names."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"init_from: {path} does not exist")
    if path.is_dir() and (path / "config.json").exists():
        return read_hf_state_dict(path)
    return _read_lightning_state_dict(path, model)


def load_pretrained_into(model: nn.Module, path: str | Path) -> None:
    """Copy pretrained weights into `model` (cast to its dtype); any missing, extra or mis-shaped
    tensor is an error that names the file and the tensors."""
    state = read_pretrained_state_dict(path, model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [f"{name}: {tuple(state[name].shape)} in the file, {tuple(expected[name].shape)} in the model"
                  for name in sorted(set(state) & set(expected)) if state[name].shape != expected[name].shape]
    if missing or unexpected or mis_shaped:
        raise ValueError(f"{path}: weights do not fit the configured model. Missing: {missing[:8]}; "
                         f"unexpected: {unexpected[:8]}; mis-shaped: {mis_shaped[:8]}. Is model= the size it was "
                         "trained as?")
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
        raise ValueError(f"{path}: a folder without config.json. Sharded FSDP2 checkpoints hold no model "
                         "dimensions; load them with init_from= in lvm.train, or export a Hugging Face folder")
    hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters") or {}
    if "model_config" not in hparams:
        raise ValueError(f"{path}: no hyper_parameters.model_config; is this a checkpoint written by lvm.train?")
    return ModelConfig(**hparams["model_config"])


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LLaMA:
    """An eval-mode LLaMA with the weights at `path` (our `.ckpt` or a Hugging Face folder), on `device`
    in `dtype` (default: fp32)."""
    model = LLaMA(read_model_config(path))
    load_pretrained_into(model, path)
    return model.to(device=device, dtype=dtype or torch.float32).eval()

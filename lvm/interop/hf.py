"""Hugging Face `LlamaForCausalLM` folders ⇄ our LLaMA, one tensor at a time.

Our parameter names are HF's without the `model.` prefix and our q/k rows are in HF's half-split rotary
layout, so a conversion renames and casts; no tensor is permuted.

- Import (`load_hf_into`): every tensor's name and shape is read first, from the safetensors headers or a
  memory-mapped `torch.load` of a `.bin` shard, and checked against the model; only then is each tensor
  read on its own and copied into its parameter, cast to the parameter's dtype. Beyond the model, memory
  holds one tensor as stored (for a `.bin` shard: that shard's pages mapped from disk), never a second
  copy of the weights.
- Export (`export_hf`): config.json, a generation_config.json that makes `generate` sample as the LVM
  does, and safetensors shards planned from the tensor sizes and written one shard at a time into a
  hidden sibling folder, which then replaces the target folder.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lvm.core.atomic_files import replace_directory, write_json_atomic
from lvm.core.json_files import read_json_object
from lvm.core.weights import load_state_dict_file
from lvm.model.config import NUM_VQ_CODES, ModelConfig
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
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SKIPPED_SUFFIX = "rotary_emb.inv_freq"  # a buffer some exports include; our model rebuilds it
EXPORT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---- config.json ---------------------------------------------------------------------------------
def model_config_from_hf(path: str | Path) -> ModelConfig:
    """ModelConfig from a Hugging Face folder's config.json, refusing what our model does not have
    (grouped-query attention, a tied head, biases, another activation, rope scaling)."""
    config_file = Path(path) / "config.json"
    hf = read_json_object(config_file)
    missing = [hf_name for hf_name in HF_CONFIG_FIELDS.values() if hf_name not in hf and hf_name != "rope_theta"]
    if missing:
        raise ValueError(f"{config_file}: missing field(s) {missing} of a LlamaConfig")
    for field in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
    ):
        if not isinstance(hf[field], int) or isinstance(hf[field], bool) or hf[field] <= 0:
            raise ValueError(f"{config_file}: field '{field}' is {hf[field]!r}, not a positive integer")
    if not isinstance(hf["rms_norm_eps"], (int, float)) or not hf["rms_norm_eps"] > 0:
        raise ValueError(f"{config_file}: field 'rms_norm_eps' is {hf['rms_norm_eps']!r}, not a positive number")
    expected = {"model_type": "llama", "hidden_act": "silu", "attention_bias": False, "mlp_bias": False}
    for field, value in expected.items():
        if hf.get(field, value) != value:
            raise ValueError(f"{config_file}: field '{field}' is {hf[field]!r}; LVM models have {value!r}")
    kv_heads = hf.get("num_key_value_heads") or hf["num_attention_heads"]
    if kv_heads != hf["num_attention_heads"]:
        raise ValueError(
            f"{config_file}: num_key_value_heads {kv_heads} != num_attention_heads "
            f"{hf['num_attention_heads']}; LVM models use plain multi-head attention"
        )
    if hf.get("tie_word_embeddings"):
        raise ValueError(f"{config_file}: tie_word_embeddings is true; LVM models have an untied head")
    head_dim = hf["hidden_size"] // hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, head_dim):
        raise ValueError(
            f"{config_file}: field 'head_dim' is {hf['head_dim']!r}; LVM models have hidden_size / "
            f"num_attention_heads = {head_dim}"
        )
    rope = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        raise ValueError(
            f"{config_file}: field 'rope_scaling'/'rope_parameters' asks for "
            f"{hf.get('rope_scaling') or rope}; LVM models use plain rotary embeddings"
        )
    rope_theta = hf.get("rope_theta") or rope.get("rope_theta", 10000.0)
    values = {ours: hf[theirs] for ours, theirs in HF_CONFIG_FIELDS.items() if theirs in hf}
    values["rope_theta"] = float(rope_theta)
    try:
        return ModelConfig(name=Path(path).name, **values)
    except ValueError as error:
        raise ValueError(f"{config_file}: {error}") from None


def hf_config(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> dict:
    """The config.json of a LlamaForCausalLM with our dimensions (read by transformers 4.x and 5.x)."""
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4.x reads it here, 5.x in rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": config.init_std,
        "use_cache": True,
        # LlamaConfig's defaults, as the original's export leaves them (the original's
        # EasyLM/models/llama/llama_model.py). Both are VQ codes, never
        # inserted; generation_config.json has no eos, so `generate` does not stop on code 2.
        "bos_token_id": 1,
        "eos_token_id": 2,
        "dtype": dtype_name,
        "torch_dtype": dtype_name,  # the name transformers 4.x reads
    }


def hf_generation_config(config: ModelConfig) -> dict:
    """generation_config.json fields that make `generate` sample as the LVM does (the original's
    evaluation/vqlm_demo/inference.py): plain sampling
    (temperature 1, top-p 1, no top-k), every special id ≥ 8192 suppressed, 8192 the pad id. No eos:
    LlamaConfig's eos 2 is a VQ code, and a visual sentence ends after its last image's tokens."""
    fields = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    if config.vocab_size > NUM_VQ_CODES:
        fields["pad_token_id"] = NUM_VQ_CODES
        fields["suppress_tokens"] = list(range(NUM_VQ_CODES, config.vocab_size))
    return fields


# ---- reading weights -----------------------------------------------------------------------------
def is_hf_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "config.json").exists()


def hf_weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a Hugging Face folder: the shards its index names, else its one weight file."""
    folder = Path(folder)
    for index_name in WEIGHT_INDEXES:
        index = folder / index_name
        if index.exists():
            weight_map = read_json_object(index).get("weight_map")
            if not weight_map or not isinstance(weight_map, dict):
                raise ValueError(f"{index}: no 'weight_map' field naming the shard of each tensor")
            files = [folder / name for name in sorted(set(weight_map.values()))]
            absent = [file.name for file in files if not file.exists()]
            if absent:
                raise FileNotFoundError(f"{index}: names shard(s) {absent} that are not in {folder}")
            return files
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return [folder / name]
    raise FileNotFoundError(f"{folder}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict memory-mapped (its tensors read from disk when touched)."""
    return load_state_dict_file(file, mmap=True)


def _stored_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of one weight file, without reading the tensors."""
    if file.suffix == ".safetensors":
        with safe_open(file, framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    return {name: tuple(tensor.shape) for name, tensor in _load_bin(file).items()}


def _file_tensors(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of one weight file, each read on its own."""
    if file.suffix == ".safetensors":
        with safe_open(file, framework="pt") as f:
            names = list(f.keys())
        for name in names:
            # Opened per tensor: the file's pages a read maps are released with it, so resident memory
            # grows by one tensor, not by the whole file.
            with safe_open(file, framework="pt") as f:
                tensor = f.get_tensor(name)
            yield name, tensor
    else:
        state = _load_bin(file)
        for name in list(state):
            yield name, state.pop(name)


def _our_name(hf_name: str) -> str:
    return hf_name.removeprefix("model.")


def _hf_name(our_name: str) -> str:
    return our_name if our_name.startswith("lm_head.") else f"model.{our_name}"


def hf_tensor_shapes(folder: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Our parameter name → (shape, file name) of every tensor of a Hugging Face folder, read from headers."""
    folder = Path(folder)
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in hf_weight_files(folder):
        for name, shape in _stored_shapes(file).items():
            if name.endswith(SKIPPED_SUFFIX):
                continue
            if _our_name(name) in shapes:
                raise ValueError(
                    f"{folder}: tensor {name} is stored twice, in {shapes[_our_name(name)][1]} and {file.name}"
                )
            shapes[_our_name(name)] = (shape, file.name)
    return shapes


def iter_hf_tensors(folder: str | Path) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """(our parameter name, tensor as stored, file) for each tensor of a Hugging Face folder, one at a time."""
    for file in hf_weight_files(folder):
        for name, tensor in _file_tensors(file):
            if not name.endswith(SKIPPED_SUFFIX):
                yield _our_name(name), tensor, file


def read_hf_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face LlamaForCausalLM folder under our names, all in memory at once
    (`load_hf_into` streams them into a model instead)."""
    return {name: tensor for name, tensor, _ in iter_hf_tensors(folder)}


def check_weights_fit(
    source: str | Path, stored: Mapping[str, tuple[tuple[int, ...], str]], expected: Mapping[str, tuple[int, ...]]
) -> None:
    """A ValueError naming `source` and the tensors unless `stored` (name → (shape, the file holding it))
    holds exactly the model's tensors (name → shape), each of the model's shape."""

    def listing(items: list[str]) -> str:
        return f"{items[:8]}" + (f" and {len(items) - 8} more" if len(items) > 8 else "")

    missing = sorted(set(expected) - set(stored))
    unexpected = [f"{name} ({stored[name][1]})" for name in sorted(set(stored) - set(expected))]
    mis_shaped = [
        f"{name}: {tuple(stored[name][0])} in {stored[name][1]}, {tuple(expected[name])} in the model"
        for name in sorted(set(stored) & set(expected))
        if tuple(stored[name][0]) != tuple(expected[name])
    ]
    if missing or unexpected or mis_shaped:
        raise ValueError(
            f"{source}: weights do not fit the configured model. Missing: {listing(missing)}; "
            f"unexpected: {listing(unexpected)}; mis-shaped: {listing(mis_shaped)}. Is model= the "
            "size it was trained as?"
        )


def load_hf_into(model: nn.Module, folder: str | Path) -> None:
    """Copy a Hugging Face folder's weights into `model`, tensor by tensor, cast to each parameter's dtype
    and device. Every name and shape is checked before the first copy."""
    folder = Path(folder)
    targets = model.state_dict(keep_vars=True)
    check_weights_fit(folder, hf_tensor_shapes(folder), {name: tuple(t.shape) for name, t in targets.items()})
    with torch.no_grad():
        for name, tensor, _ in iter_hf_tensors(folder):
            targets[name].copy_(tensor)


# ---- writing weights -----------------------------------------------------------------------------
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as "5GB", "500MB", "2GiB" (units as transformers' max_shard_size)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]i?b|b)?\s*", str(size).lower())
        if not match:
            raise ValueError(f"max_shard_size: {size!r} is not a size such as 5GB, 500MB, 2GiB or a number of bytes")
        value = int(float(match.group(1)) * _UNITS[match.group(2) or "b"])
    if value <= 0:
        raise ValueError(f"max_shard_size: {size!r} is not positive")
    return value


def plan_shards(sizes: Mapping[str, int], max_shard_size: int) -> list[list[str]]:
    """Names in order, cut into consecutive shards of at most `max_shard_size` bytes (a larger tensor
    gets a shard of its own)."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_size = 0
    for name, size in sizes.items():
        if current and current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(name)
        current_size += size
    if current:
        shards.append(current)
    return shards


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def export_hf(
    model: LLaMA, folder: str | Path, dtype: torch.dtype = torch.bfloat16, max_shard_size: int | str = "5GB"
) -> Path:
    """Write `model` as a folder `transformers.LlamaForCausalLM.from_pretrained` loads unchanged:
    config.json, generation_config.json and safetensors weights in `dtype` (`model.safetensors`, or
    `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json` when they exceed
    `max_shard_size`). One shard's tensors are cast at a time. The folder appears whole or not at all;
    an existing export there is replaced."""
    folder = Path(folder)
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype: {dtype} is not one of {[str(d) for d in EXPORT_DTYPES]}")
    if model.config.image_positions:
        raise ValueError(
            f"model '{model.config.name}': image_positions={model.config.image_positions} (a learned embedding "
            "LlamaForCausalLM does not have); only models with image_positions=0, the original's design, export"
        )
    limit = parse_size(max_shard_size)
    if folder.exists() and not is_hf_folder(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(
            f"{folder} exists and is not a Hugging Face model folder (no config.json); refusing to replace it"
        )
    tensors = {_hf_name(name): tensor for name, tensor in model.state_dict().items()}
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = {name: tensor.numel() * itemsize for name, tensor in tensors.items()}
    shards = plan_shards(sizes, limit)
    files = shard_file_names(len(shards))

    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        write_json_atomic(staging / "config.json", hf_config(model.config, dtype), indent=2)
        write_json_atomic(staging / "generation_config.json", hf_generation_config(model.config), indent=2)
        weight_map: dict[str, str] = {}
        for names, file in zip(shards, files):
            shard = {name: tensors[name].detach().to(device="cpu", dtype=dtype).contiguous() for name in names}
            save_file(shard, staging / file, metadata={"format": "pt"})
            del shard
            weight_map.update(dict.fromkeys(names, file))
        if len(files) > 1:
            write_json_atomic(
                staging / "model.safetensors.index.json",
                {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map},
                indent=2,
            )
        replace_directory(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder

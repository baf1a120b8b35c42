"""The original's JAX/EasyLM LLaMA parameters → ours (and from there a Hugging Face folder), the original's
EasyLM/models/llama/convert_easylm_to_hf.py.

Names: `transformer.wte.embedding` → `embed_tokens.weight`; `transformer.h.<i>.attention.{wq,wk,wv,wo}.kernel`
→ `layers.<i>.self_attn.{q,k,v,o}_proj.weight`; `feed_forward.{w1,w3,w2}.kernel` → `mlp.{gate,up,down}_proj.weight`;
`attention_norm`/`ffn_norm.kernel` → `input_layernorm`/`post_attention_layernorm.weight`;
`transformer.ln_f.kernel` → `norm.weight`; `lm_head.kernel` → `lm_head.weight`. Dense kernels are stored
(in, out) and are transposed. EasyLM rotates the adjacent pairs (x[2i], x[2i+1]) of q and k; HF and we rotate
(x[i], x[i + head_dim/2]), so the rows of q and k are permuted per head: even rows first, then odd rows.

The checkpoint files. Verified against the sources (EasyLM `EasyLM/checkpoint.py`, flax
`flax/serialization.py`, read through the project's code search):
- `StreamingCheckpointer.save_checkpoint` flattens the state with `flax.traverse_util.flatten_dict` and writes,
  one after another, `msgpack.Packer().pack((key, flax.serialization.to_bytes(value)))`: a msgpack array of
  two, the key path as an array of strings and the value as bytes; `load_checkpoint` reads them back with
  `msgpack.Unpacker(f, read_size=..., max_buffer_size=0)`.
- `to_bytes` of an array is `msgpack.packb(array, default=_msgpack_ext_pack, strict_types=True)`: an ExtType
  with code 1 whose payload is `msgpack.packb((shape, dtype.name, array.tobytes("C")), use_bin_type=True)`;
  code 3 is a numpy scalar in the same encoding. Arrays over 2**30 bytes are first split into a map
  `{"__msgpack_chunked_array__": True, "shape": {"0": ...}, "chunks": {"0": flat array, ...}}`.
- File kinds (the prefixes of `load_trainstate_checkpoint`): EasyLM's `llama_train.py` builds
  `TrainState.create(params=model.init(...))`, so the state's `params` is flax's variables dict
  `{"params": ...}`, and flax's TrainState keeps `step`, `params` and `opt_state` as tree fields. Hence
  `params::` files (`streaming_params*`) have keys `("params", "transformer", ...)`, and `trainstate::` files
  (`streaming_train_state*`) `("params", "params", "transformer", ...)` next to `("step",)` and
  `("opt_state", ...)` entries, which are skipped unread. `flax_params::` files are one
  `flax.serialization.msgpack_serialize` map of the whole tree; those are read whole.
- Module paths (`EasyLM/models/llama/llama_model.py`, `convert_easylm_to_hf.py`): RMSNorm's parameter is
  named `kernel`; blocks are `transformer.h.<i>`; rotary embedding multiplies (x[2i] + i·x[2i+1]) by
  exp(i·t·θ_i) with θ_i = theta^(-2i/head_dim).
Not verified: no checkpoint written by EasyLM itself was available here (nor JAX/flax to write one), so
the tests read files this project writes to the description above; that a flax struct's state dict is
keyed by its field names is flax's documented behaviour, not re-read in its source. Files written by
EasyLM forks that changed the format (other float encodings, renamed modules, scanned layers stacked along
a new axis) are not covered: their names come out as unexpected tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgpack
import numpy as np
import torch
from torch import nn

from lvm.interop.hf import check_weights_fit, export_hf
from lvm.interop.pretrained import allocate_model
from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA

_LAYER_NAMES = {  # EasyLM's, inside transformer.h.<i> → ours, inside layers.<i>
    "attention.wq.kernel": "self_attn.q_proj.weight",
    "attention.wk.kernel": "self_attn.k_proj.weight",
    "attention.wv.kernel": "self_attn.v_proj.weight",
    "attention.wo.kernel": "self_attn.o_proj.weight",
    "feed_forward.w1.kernel": "mlp.gate_proj.weight",
    "feed_forward.w3.kernel": "mlp.up_proj.weight",
    "feed_forward.w2.kernel": "mlp.down_proj.weight",
    "attention_norm.kernel": "input_layernorm.weight",
    "ffn_norm.kernel": "post_attention_layernorm.weight",
}
_TOP_NAMES = {
    "transformer.wte.embedding": "embed_tokens.weight",
    "transformer.ln_f.kernel": "norm.weight",
    "lm_head.kernel": "lm_head.weight",
}
_ROTARY = ("self_attn.q_proj.weight", "self_attn.k_proj.weight")
_EXT_NDARRAY, _EXT_NPSCALAR = 1, 3  # flax.serialization._MsgpackExtType
_CHUNKED = "__msgpack_chunked_array__"


# ---- names and layouts ---------------------------------------------------------------------------
def our_name(easylm_name: str) -> str | None:
    """Our parameter name for an EasyLM one (dotted, without the `params` prefix); None if it has none."""
    if easylm_name in _TOP_NAMES:
        return _TOP_NAMES[easylm_name]
    parts = easylm_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["transformer", "h"] and parts[2].isdigit() and parts[3] in _LAYER_NAMES:
        return f"layers.{int(parts[2])}.{_LAYER_NAMES[parts[3]]}"
    return None


def interleaved_to_half_split(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows of a q/k projection (out, in) from EasyLM's rotary layout, where each head's dimension pairs
    are adjacent (2i, 2i+1), to HF's, where they are (i, i + head_dim/2): per head, even rows then odd rows."""
    out_features, in_features = weight.shape
    head_dim = out_features // num_heads
    return weight.reshape(num_heads, head_dim // 2, 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def convert_tensor(easylm_name: str, tensor: torch.Tensor, num_heads: int) -> tuple[str, torch.Tensor] | None:
    """(our name, our layout) of one EasyLM parameter: dense kernels transposed to (out, in), q and k rows
    permuted to the half-split rotary layout. None for a name that is not a parameter of the model."""
    name = our_name(easylm_name)
    if name is None:
        return None
    if tensor.ndim == 2 and easylm_name.endswith(".kernel"):  # dense (in, out); norms' kernels are 1-D
        tensor = tensor.T
        if name.endswith(_ROTARY):
            tensor = interleaved_to_half_split(tensor, num_heads)
    return name, tensor


def _below_params(key: tuple[str, ...]) -> tuple[str, ...] | None:
    """The key path below `params` (`params.params` in a train state); None for the entries that are not
    model parameters (a train state's `step` and `opt_state`)."""
    if key[:2] == ("params", "params"):
        return key[2:]
    if key[:1] == ("params",):
        return key[1:]
    return key if key[:1] in (("transformer",), ("lm_head",)) else None


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, as JAX arrays convert to numpy
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def easylm_state_dict(params: Mapping, num_heads: int) -> dict[str, torch.Tensor]:
    """Our state dict from EasyLM parameters already in memory: a nested dict as flax holds them, or a flat
    one keyed by dotted names or key tuples, with or without the `params` prefix; numpy arrays or tensors."""
    state: dict[str, torch.Tensor] = {}
    for key, value in _flatten(params).items():
        inner = _below_params(key)
        if inner is None:
            continue
        converted = convert_tensor(".".join(inner), _as_tensor(value), num_heads)
        if converted is None:
            raise ValueError(f"EasyLM parameter {'.'.join(inner)} has no counterpart in the LLaMA model")
        state[converted[0]] = converted[1].contiguous()
    return state


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    flat: dict[tuple[str, ...], object] = {}
    for key, value in tree.items():
        path = prefix + (tuple(str(k) for k in key) if isinstance(key, tuple) else tuple(str(key).split(".")))
        if isinstance(value, Mapping) and _CHUNKED not in value:
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


# ---- the checkpoint files ------------------------------------------------------------------------
def _array_from_flax(payload: bytes, where: str) -> torch.Tensor:
    """A tensor from the payload of flax's ndarray ExtType: msgpack (shape, dtype name, C-order bytes)."""
    shape, dtype_name, buffer = msgpack.unpackb(payload, raw=True)
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else str(dtype_name)
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{where}: array of dtype {name!r}, which torch has no counterpart for")
    if not buffer:
        return torch.empty(tuple(shape), dtype=dtype)
    return torch.frombuffer(bytearray(buffer), dtype=dtype).reshape(tuple(shape))


def _ext_hook(where: str):
    def hook(code: int, payload: bytes):
        if code in (_EXT_NDARRAY, _EXT_NPSCALAR):
            return _array_from_flax(payload, where)
        return msgpack.ExtType(code, payload)

    return hook


def _unchunk(value, where: str) -> torch.Tensor:
    """A leaf of flax's msgpack encoding as a tensor, joining the pieces of a chunked (> 1 GiB) array."""
    if isinstance(value, dict) and value.get(_CHUNKED):
        shape = tuple(value["shape"][str(i)] for i in range(len(value["shape"])))
        chunks = [value["chunks"][str(i)] for i in range(len(value["chunks"]))]
        return torch.cat([chunk.reshape(-1) for chunk in chunks]).reshape(shape)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{where}: holds a {type(value).__name__}, not an array in flax's msgpack encoding")
    return value


def _decode_value(value, where: str) -> torch.Tensor:
    """A streaming entry's value, the bytes of `flax.serialization.to_bytes(array)`, as a tensor."""
    if not isinstance(value, bytes):
        raise ValueError(f"{where}: the value is a {type(value).__name__}, not the bytes of flax's to_bytes")
    try:
        leaf = msgpack.unpackb(value, ext_hook=_ext_hook(where), raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise ValueError(f"{where}: not flax's msgpack encoding of an array ({error})") from None
    return _unchunk(leaf, where)


def _is_msgpack_map(first_byte: int) -> bool:
    return 0x80 <= first_byte <= 0x8F or first_byte in (0xDE, 0xDF)


def iter_easylm_checkpoint(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted EasyLM name below `params`, tensor as stored) for each model parameter of an EasyLM
    checkpoint file: a streaming one (`params::`/`trainstate::`, read one entry at a time, the optimizer
    state skipped unread) or a `flax_params::` one (one msgpack map, read whole)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such EasyLM checkpoint file")
    with open(path, "rb") as f:
        first = f.read(1)
        if not first:
            raise ValueError(f"{path}: empty file, not an EasyLM checkpoint")
        f.seek(0)
        if _is_msgpack_map(first[0]):
            yield from _iter_flax_params(path, f.read())
            return
        unpacker = msgpack.Unpacker(f, read_size=16 * 2**20, max_buffer_size=0, raw=False, strict_map_key=False)
        for entry in itertools.count():
            where = f"{path}: entry {entry}"
            try:
                size = unpacker.read_array_header()
            except msgpack.OutOfData:
                return
            except (ValueError, msgpack.UnpackException) as error:
                raise ValueError(
                    f"{where} is not a (key path, value) pair of EasyLM's streaming checkpoint format ({error})"
                ) from None
            try:
                key = unpacker.unpack() if size == 2 else None
                if not isinstance(key, list) or not all(isinstance(k, (str, bytes, int)) for k in key):
                    raise ValueError(
                        f"{where} is not a (key path, value) pair of EasyLM's streaming checkpoint "
                        f"format (an array of {size} starting with {key!r})"
                    )
                inner = _below_params(tuple(k.decode() if isinstance(k, bytes) else str(k) for k in key))
                if inner is None:
                    unpacker.skip()  # step, optimizer state
                    continue
                name = ".".join(inner)
                value = unpacker.unpack()
            except msgpack.OutOfData:
                raise ValueError(f"{where}: the file ends inside it (truncated?)") from None
            except msgpack.UnpackException as error:
                raise ValueError(f"{where}: not valid msgpack ({error})") from None
            yield name, _decode_value(value, f"{path}: {name}")


def _iter_flax_params(path: Path, data: bytes) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook(str(path)), raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise ValueError(f"{path}: not a flax msgpack checkpoint ({error})") from None
    for key, value in _flatten(tree).items():
        inner = _below_params(key)
        if inner is not None:
            name = ".".join(inner)
            yield name, _unchunk(value, f"{path}: {name}")


def read_easylm_state_dict(path: str | Path, num_heads: int) -> dict[str, torch.Tensor]:
    """Our state dict (names and layouts converted, dtypes as stored) from an EasyLM checkpoint file, all in
    memory at once (`load_easylm_into` streams into a model instead)."""
    state: dict[str, torch.Tensor] = {}
    for easylm_name, tensor in iter_easylm_checkpoint(path):
        converted = convert_tensor(easylm_name, tensor, num_heads)
        if converted is None:
            raise ValueError(f"{path}: parameter {easylm_name} has no counterpart in the LLaMA model")
        state[converted[0]] = converted[1].contiguous()
    return state


def load_easylm_into(model: nn.Module, path: str | Path) -> None:
    """Copy the parameters of an EasyLM checkpoint file into `model` (our LLaMA), converted and cast
    tensor by tensor as they are read. Names and shapes are checked as they come; anything missing,
    unexpected or mis-shaped is one ValueError at the end naming the file and the tensors (the model then
    holds a partial copy)."""
    num_heads = model.config.num_heads
    targets = model.state_dict(keep_vars=True)
    stored: dict[str, tuple[tuple[int, ...], str]] = {}
    with torch.no_grad():
        for easylm_name, tensor in iter_easylm_checkpoint(path):
            converted = convert_tensor(easylm_name, tensor, num_heads)
            if converted is None:
                stored[easylm_name] = (tuple(tensor.shape), Path(path).name)
                continue
            name, tensor = converted
            stored[name] = (tuple(tensor.shape), Path(path).name)
            if name in targets and targets[name].shape == tensor.shape:
                targets[name].copy_(tensor)
    check_weights_fit(path, stored, {name: tuple(t.shape) for name, t in targets.items()})


def load_easylm_model(
    path: str | Path, config: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LLaMA:
    """An eval-mode LLaMA of `config` (EasyLM files hold no head count: give the size it was trained as)
    holding the parameters of an EasyLM checkpoint file, in `dtype` on `device`."""
    model = allocate_model(config, device, dtype)
    load_easylm_into(model, path)
    return model.eval()


def convert_easylm_to_hf(
    path: str | Path,
    folder: str | Path,
    config: ModelConfig,
    dtype: torch.dtype = torch.float16,
    max_shard_size: int | str = "5GB",
) -> Path:
    """An EasyLM checkpoint file → a Hugging Face LlamaForCausalLM folder (fp16 by default, as the
    original's `convert_easylm_to_hf.py` writes), through one model in `dtype`."""
    return export_hf(load_easylm_model(path, config, dtype=dtype), folder, dtype=dtype, max_shard_size=max_shard_size)

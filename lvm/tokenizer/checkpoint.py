"""Read and write the open-muse VQGAN folder layout: `config.json` + one weights file.

Layout (what open-muse's `save_pretrained` writes):
    config.json          {"_class_name": "VQGANModel", "_version": ..., "resolution": 256, ...}
    pytorch_model.bin    a torch state dict (open-muse's only format)
or, written by us with `safe_serialization=True` and read from any of these names,
    model.safetensors / diffusion_pytorch_model.safetensors / pytorch_model.safetensors

Loading is strict: every parameter must be present with its exact shape, nothing extra, and
`.bin` files are read with `weights_only=True` (no pickled code runs).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file as save_safetensors

from lvm.core.atomic_files import atomic_write
from lvm.core.weights import load_state_dict_file, state_dict_problems
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel

CONFIG_NAME = "config.json"
CLASS_NAME = "VQGANModel"
FORMAT_VERSION = "0.1.0"  # written to `_version`; open-muse writes its own package version there
BIN_WEIGHTS_NAME = "pytorch_model.bin"
SAFETENSORS_WEIGHTS_NAME = "model.safetensors"
# Looked up in this order: safetensors first (no pickle), then open-muse's torch pickle.
WEIGHTS_NAMES = (
    SAFETENSORS_WEIGHTS_NAME,
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.safetensors",
    BIN_WEIGHTS_NAME,
)
# Older open-muse configs predate `no_attn_mid_block` (absent: the mid attention exists, as before it);
# `gray_flag` is ours, absent in every open-muse config.
OPTIONAL_FIELDS = {"no_attn_mid_block": False, "gray_flag": False}


def read_config(path: str | Path) -> VQGANConfig:
    """Parse an open-muse `config.json` (a file, or the folder holding it) into a VQGANConfig.

    Keys starting with `_` are metadata and ignored; unknown fields warn; a missing field is a
    ValueError naming the file and the field.
    """
    path = Path(path)
    config_file = path / CONFIG_NAME if path.is_dir() else path
    try:
        raw = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{config_file}: no VQGAN config (expected an open-muse folder with {CONFIG_NAME})"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file}: expected a JSON object, got {type(raw).__name__}")
    class_name = raw.get("_class_name")
    if class_name is not None and class_name != CLASS_NAME:
        raise ValueError(f"{config_file}: field '_class_name' is {class_name!r}, expected {CLASS_NAME!r}")

    known = VQGANConfig.field_names()
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in known)
    if unknown:
        warnings.warn(f"{config_file}: ignoring unknown VQGAN config fields {unknown}", stacklevel=2)
    values = {}
    for name in known:
        if name in raw:
            values[name] = raw[name]
        elif name in OPTIONAL_FIELDS:
            values[name] = OPTIONAL_FIELDS[name]
        else:
            raise ValueError(f"{config_file}: missing required field '{name}' (fields expected: {known})")
    try:
        return VQGANConfig(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_file}: {err}") from err


def find_weights_file(folder: str | Path) -> Path:
    """The weights file of an open-muse folder, safetensors preferred over `pytorch_model.bin`."""
    folder = Path(folder)
    for name in WEIGHTS_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no VQGAN weights file (looked for {', '.join(WEIGHTS_NAMES)})")


def read_state_dict(weights_file: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or torch `.bin` file, the latter read with weights_only=True."""
    return load_state_dict_file(weights_file, map_location)


def check_state_dict(model: VQGANModel, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise a ValueError listing every missing, unexpected or wrongly shaped key of `state`."""
    problems = state_dict_problems(state, model.state_dict(), stored="checkpoint", wanted="model")
    if problems:
        raise ValueError(f"{source}: weights do not match the VQGAN built from {CONFIG_NAME}: " + "; ".join(problems))


def load_vqgan(path: str | Path, map_location: str | torch.device = "cpu") -> VQGANModel:
    """Build the VQGAN described by `path/config.json` and load its weights; returned in eval mode.

    `path` is an open-muse folder (config.json + model.safetensors / pytorch_model.bin).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: not a folder (expected an open-muse VQGAN folder with {CONFIG_NAME} and weights)"
        )
    config = read_config(folder / CONFIG_NAME)
    weights_file = find_weights_file(folder)
    state = read_state_dict(weights_file, map_location=map_location)
    model = VQGANModel(config)
    check_state_dict(model, state, weights_file)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def save_vqgan(
    model: VQGANModel, path: str | Path, safe_serialization: bool = True, dtype: torch.dtype | None = None
) -> Path:
    """Write `model` as an open-muse folder: config.json + model.safetensors (or pytorch_model.bin
    when `safe_serialization` is false), floating tensors cast to `dtype` when given (e.g. float16
    halves the file; `load_vqgan` builds an fp32 model from it either way). Each file is written
    atomically; weights files of the other format left from an earlier save are removed so the
    loader cannot pick a stale one. Returns the folder.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder (save_vqgan writes a folder)")
    folder.mkdir(parents=True, exist_ok=True)
    fields = model.config.to_dict()
    if not fields["gray_flag"]:  # ours: written only when set, so a plain tokenizer's config.json is open-muse's
        del fields["gray_flag"]
    config = {"_class_name": CLASS_NAME, "_version": FORMAT_VERSION, **fields}
    # Contiguous CPU copies: safetensors refuses views, and the file must not depend on the device.
    state = {
        k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }

    weights_name = SAFETENSORS_WEIGHTS_NAME if safe_serialization else BIN_WEIGHTS_NAME
    if safe_serialization:
        atomic_write(folder / weights_name, lambda tmp: save_safetensors(state, str(tmp), metadata={"format": "pt"}))
    else:
        atomic_write(folder / weights_name, lambda tmp: torch.save(state, tmp))
    atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n"))
    for stale in WEIGHTS_NAMES:
        if stale != weights_name and (folder / stale).is_file():
            (folder / stale).unlink()
    return folder

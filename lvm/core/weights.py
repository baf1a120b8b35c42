"""Reading weight files safely: safetensors, or torch files with `weights_only=True`, so no pickled code
runs. A file torch refuses for holding Python objects becomes a `RefusedCheckpointError` naming it; any
other unreadable file a `ValueError` naming it."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors

from lvm.core.errors import refuse_unsafe_pickles


def load_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`, memory-mapped when `mmap` (tensors read from disk when
    touched; files in torch's legacy pre-zip format cannot be mapped and are read whole)."""
    try:
        with refuse_unsafe_pickles(path):
            if mmap:
                try:
                    return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
                except RuntimeError:
                    pass
            return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise ValueError(f"{path}: not a file torch.load can read ({type(error).__name__}: {error})") from error


def load_state_dict_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, torch.Tensor]:
    """The flat name → tensor dict of a `.safetensors` file or a torch file (`load_torch_file`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            state = load_safetensors(str(path), device=str(map_location))
        except Exception as error:  # safetensors raises its own SafetensorError or OSError on a bad header
            raise ValueError(f"{path}: not a safetensors file ({type(error).__name__}: {error})") from error
    else:
        state = load_torch_file(path, map_location, mmap)
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a flat dict of name → tensor (a state dict)")
    return state


def state_dict_problems(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    stored: str = "file",
    wanted: str = "expected",
) -> list[str]:
    """Every missing, unexpected or wrongly shaped key of `state` against `expected`, as phrases for an
    error message (empty when they match); shapes read "<stored> (a, b) vs <wanted> (c, d)"."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: {stored} {tuple(state[k].shape)} vs {wanted} {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    labelled = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
    return [f"{label} {keys}" for label, keys in labelled if keys]

"""`python -m lvm.convert`: an EasyLM file → a Hugging Face folder from the command line, that folder → our
.ckpt → a Hugging Face folder again, all to the same logits; wrong options are errors naming the option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors import safe_open
from transformers import LlamaForCausalLM

from lvm.convert import convert
from lvm.interop.pretrained import load_model, read_model_config
from lvm.model import SIZES
from tests.interop.test_easylm import easylm_params, hf_model, write_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DEBUG = SIZES["vqlm_debug"]  # 128 wide, 2 layers, 4 heads, the LVM vocabulary
IDS = torch.randint(0, 8192, (1, 24), generator=torch.Generator().manual_seed(2))


def compose_convert(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("convert", overrides=[f"paths.root_dir={tmp_path}", *overrides])


def hf_logits(folder: Path) -> torch.Tensor:
    with torch.no_grad():
        return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()(IDS).logits


def test_convert_cli_round_trip(tmp_path):
    reference = hf_model(DEBUG)
    easylm = write_checkpoint(tmp_path / "streaming_params", easylm_params(reference, DEBUG.num_heads), "params")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LVM_ROOT": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lvm.convert",
            "direction=from_easylm",
            f"src={easylm}",
            f"dst={tmp_path / 'hf'}",
            "model=vqlm_debug",
            "dtype=fp32",
            "max_shard_size=1MB",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "from_easylm:" in result.stdout and (tmp_path / "hf" / "model.safetensors.index.json").exists()
    with torch.no_grad():
        expected = reference(IDS).logits
    torch.testing.assert_close(hf_logits(tmp_path / "hf"), expected, rtol=1e-4, atol=1e-4)

    ckpt = convert(
        compose_convert(tmp_path, "direction=from_hf", f"src={tmp_path / 'hf'}", f"dst={tmp_path / 'lvm.ckpt'}")
    )
    assert read_model_config(ckpt).hidden_size == 128
    with torch.no_grad():
        torch.testing.assert_close(load_model(ckpt)(IDS), expected, rtol=1e-4, atol=1e-4)

    folder = convert(compose_convert(tmp_path, "direction=to_hf", f"src={ckpt}", f"dst={tmp_path / 'hf_bf16'}"))
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16  # to_hf's default dtype
    torch.testing.assert_close(hf_logits(folder), expected, rtol=0.05, atol=0.05)


def test_convert_options_are_checked(tmp_path):
    src = tmp_path / "streaming_params"
    src.write_bytes(b"\x90")
    for overrides, error, message in [
        (["direction=sideways"], ValueError, r"direction: 'sideways' is not one of"),
        (["direction=from_easylm"], ValueError, r"model: direction=from_easylm needs the size .*streaming_params"),
        (["direction=to_hf", "model=vqlm_debug"], ValueError, r"model: only direction=from_easylm reads it"),
        (["direction=to_hf", "dtype=fp8"], ValueError, r"dtype: 'fp8' is not one of fp32, bf16, fp16"),
        (["direction=to_hf", "max_shard_size=huge"], ValueError, r"max_shard_size: 'huge' is not a size"),
        (["direction=to_hf", f"src={tmp_path / 'nothing.ckpt'}"], FileNotFoundError, r"src: .*nothing\.ckpt does not"),
    ]:
        cfg = compose_convert(tmp_path, f"src={src}", f"dst={tmp_path / 'out'}", *overrides)
        with pytest.raises(error, match=message):
            convert(cfg)

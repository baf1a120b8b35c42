"""Weight files are read without running pickled code; a refused file is named, with the reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lvm.core.errors import RefusedCheckpointError
from lvm.core.weights import load_state_dict_file, load_torch_file
from lvm.eval.metrics import check_inception_weights
from lvm.interop.easylm import read_easylm_state_dict
from lvm.interop.hf import hf_config
from lvm.interop.pretrained import load_model, load_pretrained_into, read_model_config
from lvm.model.config import ModelConfig
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.training.perceptual import read_weights
from lvm.train import train
from tests.conftest import DEMO_SHARDS
from tests.core.test_errors import run_entry_point

ROOT = Path(__file__).resolve().parents[2]
REFUSED = (
    "refused to load: it contains Python objects other than tensors (possibly code); only safetensors or "
    "plain tensor .bin/.ckpt files are loaded"
)


class CreatesAFile:
    """Unpickling this calls open(path, "w"): the file appearing is the code having run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def payload(tmp_path) -> tuple[Path, Path]:
    """(a torch file whose pickle would create `marker`, marker). Proven live: an unsafe load creates it."""
    marker = tmp_path / "the_payload_ran"
    path = tmp_path / "payload.pt"
    torch.save({"state_dict": {"model.w": torch.zeros(2)}, "hook": CreatesAFile(marker)}, path)
    torch.load(path, weights_only=False)  # what weights_only=True prevents
    assert marker.exists()
    marker.unlink()
    return path, marker


def planted(payload: tuple[Path, Path], where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    os.replace(payload[0], where)
    return where


def test_every_loader_refuses_the_payload_by_name_and_it_never_runs(payload, tmp_path):
    tiny = ModelConfig(name="tiny", hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2)
    source, marker = payload
    cases = {
        "load_torch_file": lambda p: load_torch_file(p, mmap=True),
        "load_state_dict_file": load_state_dict_file,
        "our .ckpt: read_model_config": read_model_config,
        "our .ckpt: load_model": load_model,
        "inception weights": check_inception_weights,
        "LPIPS / VGG weights": read_weights,
    }
    for name, load in cases.items():
        path = planted(payload, tmp_path / name.replace(" ", "_").replace(":", "").replace("/", "") / "model.ckpt")
        with pytest.raises(RefusedCheckpointError) as refused:
            load(path)
        assert str(refused.value) == f"{path}: {REFUSED}", name
        payload = (path, marker)
    vqgan = planted(payload, tmp_path / "vqgan" / "pytorch_model.bin")
    shutil.copy(ROOT / "lvm" / "assets" / "demo_tokenizer" / "config.json", vqgan.parent / "config.json")
    with pytest.raises(RefusedCheckpointError, match=f"{vqgan}: refused to load"):
        load_vqgan(vqgan.parent)
    hf = planted((vqgan, marker), tmp_path / "hf" / "pytorch_model.bin")
    (hf.parent / "config.json").write_text(json.dumps(hf_config(tiny)))
    with pytest.raises(RefusedCheckpointError, match=f"{hf}: refused to load"):
        load_model(hf.parent)
    with pytest.raises(RefusedCheckpointError, match=f"{hf}: refused to load"):
        load_pretrained_into(torch.nn.Module(), hf.parent)
    # EasyLM files are msgpack, which holds no code at all: a pickle there is simply not an EasyLM file.
    easylm = planted((hf, marker), tmp_path / "easylm" / "streaming_params")
    with pytest.raises(ValueError, match=str(easylm)):
        read_easylm_state_dict(easylm, num_heads=2)
    assert not marker.exists()


def test_resuming_from_the_payload_is_refused_by_name(payload, demo_data_dir, tmp_path):
    path = planted(payload, tmp_path / "resume.ckpt")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.data_dir={demo_data_dir}",
                f"paths.output_dir={tmp_path / 'run'}",
                "experiment=demo",
                *DEMO_SHARDS,
                "trainer.max_steps=2",
                "logger=[]",
                "trainer.enable_progress_bar=false",
                f"ckpt_path={path}",
            ],
        )
    with pytest.raises(RefusedCheckpointError, match=f"{path}: refused to load"):
        train(cfg)
    assert not payload[1].exists()


def test_the_command_line_says_so_in_one_line(payload, tmp_path):
    path = planted(payload, tmp_path / "model.ckpt")
    result = run_entry_point(
        "lvm.generate", f"model_path={path}", f"tokenizer_path={tmp_path}", "frames=[a.png]", cwd=tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: {path}: {REFUSED}"]
    assert not payload[1].exists()

"""`python -m lvm.convert direction=... src=... dst=...`: weights between our checkpoints, Hugging Face
folders and the original's EasyLM files (conf/convert.yaml).

Examples:
    python -m lvm.convert direction=to_hf src=logs/train/runs/x/checkpoints/last.ckpt dst=export/lvm_7b dtype=bf16
    python -m lvm.convert direction=from_hf src=hf/LVM-7b dst=ckpt/lvm_7b.ckpt
    python -m lvm.convert direction=from_easylm src=ckpt/streaming_params model=vqlm_7b dst=export/lvm_7b
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from lvm.core.devices import parse_dtype
from lvm.core.errors import report_user_errors
from lvm.interop.easylm import convert_easylm_to_hf
from lvm.interop.hf import parse_size
from lvm.interop.pretrained import export_checkpoint_to_hf, load_model, save_model_checkpoint
from lvm.model.config import ModelConfig

DEFAULT_DTYPES = {"to_hf": "bf16", "from_hf": "fp32", "from_easylm": "fp16"}


def convert(cfg: DictConfig) -> Path:
    """Check the options, then run the one conversion `cfg.direction` names; returns what was written."""
    direction = cfg.direction
    if direction not in DEFAULT_DTYPES:
        raise ValueError(f"direction: {direction!r} is not one of {list(DEFAULT_DTYPES)}")
    src, dst = Path(cfg.src), Path(cfg.dst)
    if not src.exists():
        raise FileNotFoundError(f"src: {src} does not exist")
    dtype = parse_dtype(cfg.get("dtype") or DEFAULT_DTYPES[direction])
    max_shard_size = parse_size(cfg.max_shard_size)
    model_cfg = cfg.get("model")
    if direction == "from_easylm":
        if model_cfg is None:
            raise ValueError(
                f"model: direction=from_easylm needs the size {src} was trained as, e.g. "
                "model=vqlm_7b (EasyLM files hold no head count)"
            )
        config: ModelConfig = instantiate(model_cfg)
        written = convert_easylm_to_hf(src, dst, config, dtype=dtype, max_shard_size=max_shard_size)
    elif model_cfg is not None:
        raise ValueError(f"model: only direction=from_easylm reads it; the dimensions of {src} are read from it")
    elif direction == "to_hf":
        written = export_checkpoint_to_hf(src, dst, dtype=dtype, max_shard_size=max_shard_size)
    else:
        written = save_model_checkpoint(load_model(src, dtype=dtype), dst)
    print(f"{direction}: {src} → {written} ({str(dtype).removeprefix('torch.')})")
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="convert")
@report_user_errors
def main(cfg: DictConfig) -> None:
    convert(cfg)


if __name__ == "__main__":
    main()

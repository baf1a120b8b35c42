"""`python -m lvm.generate`: visual prompting from the command line (conf/generate.yaml).

Examples:
    python -m lvm.generate model_path=ckpt/lvm_7b_hf tokenizer_path=ckpt/vqgan frames=clip.mp4 n_new_frames=4
    python -m lvm.generate model_path=... tokenizer_path=... examples='[[x1.png,y1.png]]' query=x2.png
    python -m lvm.generate model_path=... tokenizer_path=... prompts=eval/prompts.jsonl n_candidates=4
Outputs land in `<out_dir>/<prompt id>/` with `<out_dir>/results.jsonl` (see lvm/generation/batch.py).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from lvm.core.devices import parse_dtype
from lvm.core.errors import report_user_errors
from lvm.generation.batch import VisualPrompt, generate_for_prompts, read_prompts
from lvm.generation.engine import GenerationEngine
from lvm.generation.sampler import SamplingConfig
from lvm.interop.pretrained import load_model
from lvm.tokenizer.checkpoint import load_vqgan


def prompts_from_config(cfg: DictConfig) -> list[VisualPrompt]:
    """The prompts that `prompts`, `frames` or `examples` + `query` name; exactly one may be set."""
    given = [name for name in ("prompts", "frames", "examples") if cfg.get(name) is not None]
    if len(given) != 1:
        raise ValueError(f"set exactly one of prompts=, frames= or examples= (with query=); got {given or 'none'}")
    target = Path(cfg.target) if cfg.get("target") else None
    if cfg.prompts is not None:
        return read_prompts(cfg.prompts, cfg.input_key, cfg.target_key, cfg.id_key, cfg.base_dir)
    if cfg.frames is not None:
        frames = list(cfg.frames) if isinstance(cfg.frames, ListConfig) else [cfg.frames]
        return [VisualPrompt("sequence", tuple(Path(f) for f in frames), target)]
    if cfg.query is None:
        raise ValueError("examples= needs query= (the x whose y is generated)")
    pairs = [list(pair) for pair in cfg.examples]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"examples must be a list of [x, y] image path pairs, got {pairs}")
    images = [Path(p) for pair in pairs for p in pair] + [Path(cfg.query)]  # x₁ y₁ … x_k y_k x_q
    return [VisualPrompt("analogy", tuple(images), target)]


def generate(cfg: DictConfig) -> list[dict]:
    """Load the model and the VQGAN, generate every prompt's candidates; returns the results."""
    dtype = parse_dtype(cfg.dtype)
    prompts = prompts_from_config(cfg)  # bad options fail before the (slow) model load
    model = load_model(cfg.model_path, device=cfg.device, dtype=dtype, quantize=cfg.get("quantize"))
    vqgan = load_vqgan(cfg.tokenizer_path, map_location=cfg.device)
    engine = GenerationEngine(model, compile_decode=cfg.compile_decode)
    sampling = SamplingConfig(temperature=cfg.sampling.temperature, top_k=cfg.sampling.top_k, top_p=cfg.sampling.top_p)
    resize = cfg.resize_output
    resize = list(resize) if isinstance(resize, ListConfig) else resize
    results = generate_for_prompts(
        engine,
        vqgan,
        prompts,
        cfg.out_dir,
        sampling,
        n_new_frames=cfg.n_new_frames,
        n_candidates=cfg.n_candidates,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        resize_output=resize,
        include_input=cfg.include_input,
        max_context_frames=cfg.max_context_frames,
        frame_stride=cfg.frame_stride,
    )
    print(f"Wrote {len(results)} prompt(s) × {cfg.n_candidates} candidate(s) to {cfg.out_dir} (results.jsonl)")
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    main()

"""`python -m lvm.evaluate task=…`: perplexity of target images or video frames, or image metrics of
generations (conf/eval.yaml).

Examples:
    python -m lvm.evaluate task=perplexity model_path=ckpt/lvm.ckpt tokenizer_path=ckpt/vqgan prompts=eval/tasks.jsonl
    python -m lvm.evaluate task=video_perplexity model_path=hf/lvm-7b tokenizer_path=ckpt/vqgan \
        videos=data/val_videos device=cuda dtype=bf16
    python -m lvm.evaluate task=image_metrics results=logs/generate/runs/<time>/results.jsonl \
        inception_weights=weights/pt_inception-2015-12-05-6726825d.pth
Files land in the run folder (logs/eval_<task>/runs/<time>): <task>.csv and <task>.json.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from lvm.core.devices import parse_dtype
from lvm.core.errors import report_user_errors
from lvm.eval.metrics import evaluate_generations
from lvm.eval.perplexity import evaluate_perplexity, evaluate_video_perplexity
from lvm.interop.pretrained import load_model
from lvm.tokenizer.checkpoint import load_vqgan

log = logging.getLogger(__name__)

TASKS = ("perplexity", "video_perplexity", "image_metrics")


def _require(cfg: DictConfig, *keys: str) -> None:
    missing = [key for key in keys if cfg.get(key) is None]
    if missing:
        raise ValueError(f"task={cfg.task} needs " + " ".join(f"{key}=…" for key in missing))


def evaluate(cfg: DictConfig) -> dict:
    """Run the task `cfg.task`; returns its summary (also written to `<cfg.out_dir>/<task>.json`)."""
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r}: expected one of {', '.join(TASKS)}")
    if cfg.task == "image_metrics":
        _require(cfg, "results")
        return evaluate_generations(
            cfg.results,
            cfg.out_dir,
            size=cfg.image_size,
            inception_weights=cfg.inception_weights,
            fid_feature=cfg.fid_feature,
            progress=cfg.progress,
        )
    _require(cfg, "model_path", "tokenizer_path", "prompts" if cfg.task == "perplexity" else "videos")
    model = load_model(cfg.model_path, device=cfg.device, dtype=parse_dtype(cfg.dtype), quantize=cfg.get("quantize"))
    vqgan = load_vqgan(cfg.tokenizer_path, map_location=cfg.device)
    common = dict(
        batch_size=cfg.batch_size,
        encode_batch_size=cfg.encode_batch_size,
        skip_bad=cfg.skip_bad,
        progress=cfg.progress,
        about={"model_path": str(cfg.model_path), "tokenizer_path": str(cfg.tokenizer_path)},
    )
    if cfg.task == "perplexity":
        summary = evaluate_perplexity(
            model,
            vqgan,
            cfg.prompts,
            cfg.out_dir,
            base_dir=cfg.base_dir,
            input_key=cfg.input_key,
            target_key=cfg.target_key,
            **common,
        )
    else:
        videos = OmegaConf.to_object(cfg.videos) if OmegaConf.is_config(cfg.videos) else cfg.videos
        summary = evaluate_video_perplexity(
            model,
            vqgan,
            videos,
            cfg.out_dir,
            n_context_frames=cfg.n_context_frames,
            n_target_frames=cfg.n_target_frames,
            stride=cfg.stride,
            seed=cfg.seed,
            center_crop=cfg.center_crop,
            **common,
        )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    summary = evaluate(cfg)
    # The headline number, for sweepers: perplexity (the original's mean over examples) or PSNR.
    return summary.get("mean_perplexity", summary.get("psnr"))


if __name__ == "__main__":
    main()

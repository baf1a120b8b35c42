"""`python -m lvm.app`: a Gradio page for visual prompting (the original's evaluation/vqlm_demo/inference.py),
served on 127.0.0.1 unless told otherwise (conf/app.yaml). The page itself lives in `lvm/page/`.

Two tabs: "Analogy" (x₁ y₁ … x_k y_k x_q → candidate y_q's) and "Video / sequence" (a video file, or
frames in name order → the next frames). Candidates appear one by one as they are drawn; candidate i
(counting from 0) is drawn alone with seed + i, so any one of them can be drawn again by itself
(n_candidates=1, seed=seed + i). Served on a demo run (`demo_run`, by default the newest one that
`python -m lvm.demo` finished), the page loads the run's LVM and VQGAN and offers its held-out prompts
(prompts.json) as clickable examples in both tabs.

Examples:
    python -m lvm.app                                      # the newest demo run, with its prompts as examples
    python -m lvm.app demo_run=logs/demo/runs/<time>
    python -m lvm.app model_path=logs/train/runs/<time>/checkpoints/last.ckpt tokenizer_path=ckpt/vqgan
    python -m lvm.app model_path=ckpt/lvm-7b-hf tokenizer_path=ckpt/vqgan device=cuda dtype=fp16
Uploads larger than `limits.max_upload_mb` or `limits.max_pixels`, and files that are not images (or
not videos, in the video field), are refused with a message naming the file and the limit.
"""

from __future__ import annotations

import gradio as gr
import hydra
from omegaconf import DictConfig

from lvm.core.errors import report_user_errors
from lvm.page.demo_runs import resolve_page_sources
from lvm.page.layout import PageOptions, build_app, launch_app
from lvm.page.prompter import load_prompter
from lvm.page.uploads import UploadLimits


def serve(cfg: DictConfig, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Load the model and tokenizer that `cfg` names (or its demo run holds), build the page with the run's
    prompts as examples and serve it."""
    sources = resolve_page_sources(cfg.demo_run, cfg.demo_runs_dir, cfg.model_path, cfg.tokenizer_path)
    limits = UploadLimits(**cfg.limits)
    prompter = load_prompter(
        sources.model_path, sources.tokenizer_path, cfg.device, cfg.dtype, limits, quantize=cfg.get("quantize")
    )
    app = build_app(prompter, PageOptions(**cfg.page), sources.prompts)
    return launch_app(app, limits, cfg.server_name, cfg.server_port, prevent_thread_lock)


@hydra.main(version_base="1.3", config_path="../conf", config_name="app")
@report_user_errors
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()

"""The end-to-end demo on a miniature corpus: every stage runs and the summary holds real numbers."""

import json
import math
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from PIL import Image

from lvm.demo import run_demo

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = [
    "corpus.n_videos=6", "corpus.n_val_videos=2", "corpus.n_images=12", "corpus.n_val_images=8",
    "corpus.n_sequences=2", "corpus.n_val_sequences=1", "tokenizer_training.max_steps=6",
    "tokenizer_training.batch_size=8", "prompting.n_prompts=1",
    "lvm_overrides=['trainer.max_steps=6','trainer.val_check_interval=3','scheduler.warmup_steps=2',"
    "'callbacks.model_checkpoint.every_n_train_steps=3','trainer.enable_progress_bar=false']",
]


def test_demo_runs_every_stage(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tmp_path}", *TINY])
        summary = run_demo(cfg, tmp_path)

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    for key in ("tokenizer_psnr", "val_loss", "val_ppl", "unigram_loss", "copy_last_frame_loss"):
        assert math.isfinite(summary[key]), key
    assert summary["val_ppl"] == math.exp(summary["val_loss"])
    # the saved tokenizer is in the open-muse layout, the LVM left checkpoints and TensorBoard logs
    assert json.loads((tmp_path / "tokenizer" / "config.json").read_text())["num_embeddings"] == 256
    assert (tmp_path / "lvm" / "checkpoints" / "last.ckpt").exists()
    assert list((tmp_path / "lvm" / "tensorboard").glob("events.out.tfevents.*"))
    for kind in ("video", "paired", "sequence"):
        manifest = json.loads((tmp_path / "shards" / "val" / kind / "manifest.json").read_text())
        assert manifest["tokens"] == manifest["samples"] * 8 * 16
    # one row per prompt (1 video + 1 analogy), each: 7 prompt images | generated | truth, 64 px
    grid = np.asarray(Image.open(tmp_path / "prompts.png"))
    assert grid.shape == (2 * (64 + 4), 9 * 64 + 3 * 4, 3)
    assert summary["prompt_rows"][0] == "next frame"

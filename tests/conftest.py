"""Fixtures shared across the suite, made once per session: tiny shards in the demo layout, a tiny
VQGAN checkpoint folder, and a real tiny scaling sweep trained through the `python -m lvm.train -m` CLI
(3 widths × 6 steps of the demo shards, about 40 s on 2 cores; read by tests/analysis and tests/test_plan.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lvm.data.shards import ShardWriter, VisualSentence
from lvm.tokenizer import VQGANModel, save_vqgan
from tests.cli import run_train_cli
from tests.tokenizer.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]

TOKENS_PER_IMAGE = 16
IMAGES_PER_SENTENCE = 8
# conf/data/demo.yaml is sized for the demo tokenizer's 64 tokens per image; these shards have 16.
DEMO_SHARDS = [f"data.tokens_per_image={TOKENS_PER_IMAGE}", f"data.seq_len={TOKENS_PER_IMAGE * IMAGES_PER_SENTENCE}"]


def make_sentence(kind: str, rng: np.random.Generator) -> VisualSentence:
    """Learnable token patterns: video frames drift slowly, pairs map x to a fixed shift, sequences repeat."""
    n = TOKENS_PER_IMAGE
    if kind == "video":
        frame = rng.integers(0, 64, n)
        frames = []
        for _ in range(IMAGES_PER_SENTENCE):
            frames.append(frame.copy())
            frame[rng.integers(0, n)] = rng.integers(0, 64)
    elif kind == "paired":
        frames = []
        for _ in range(IMAGES_PER_SENTENCE // 2):
            x = rng.integers(64, 128, n)
            frames += [x, x + 64]
    else:
        frames = [rng.integers(0, 256, n)] * IMAGES_PER_SENTENCE
    tokens = np.concatenate(frames).astype(np.uint16)
    return VisualSentence(tokens=tokens, kind=kind, source=[f"{kind}.synthetic"], n_images=IMAGES_PER_SENTENCE)


def write_demo_shards(root: Path, n_train: int = 48, n_val: int = 8, seed: int = 0) -> Path:
    """<root>/shards/{train,val}/{video,paired,sequence}/manifest.json, as `python -m lvm.demo` writes them."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        for kind in ("video", "paired", "sequence"):
            with ShardWriter(
                root / "shards" / split / kind, max_samples_per_shard=16, tokens_per_image=TOKENS_PER_IMAGE
            ) as w:
                for _ in range(count):
                    w.write(make_sentence(kind, rng))
    return root


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    """A data_dir holding small demo-layout shards (read-only for tests)."""
    return write_demo_shards(tmp_path_factory.mktemp("demo_data"))


@pytest.fixture(scope="session")
def vqgan_dir(tmp_path_factory) -> Path:
    """The tiny 32-px VQGAN of tests/tokenizer/conftest.py, saved in the open-muse layout."""
    torch.manual_seed(0)
    model = VQGANModel(tiny_config())
    with torch.no_grad():  # spread the codebook so many codes are used and a wrong code shows
        model.quantize.embedding.weight.normal_(0.0, 0.5)
    folder = tmp_path_factory.mktemp("vqgan")
    save_vqgan(model, folder)
    return folder


WIDTHS = {"w64": 64, "w96": 96, "w128": 128}  # conf/width/<name>.yaml: 2 layers, 4 heads, SwiGLU 2×width
MAX_STEPS, BATCH_SIZE, SEQ_LEN = 6, 8, 128  # conf/data/demo.yaml's batch and sequence length


@pytest.fixture(scope="session")
def tiny_sweep(demo_data_dir, tmp_path_factory) -> Path:
    """The sweep folder (read-only for tests: copy it to break it): jobs 0, 1, 2 = widths 64, 96, 128."""
    root = tmp_path_factory.mktemp("scaling_sweep")
    sweep = root / "sweep"
    run_train_cli(
        "-m",
        "experiment=demo",
        *DEMO_SHARDS,
        "+sweep=scaling_tiny",
        f"paths.data_dir={demo_data_dir}",
        f"+width={','.join(WIDTHS)}",
        f"trainer.max_steps={MAX_STEPS}",
        f"trainer.val_check_interval={MAX_STEPS}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "scheduler.warmup_steps=2",
        f"hydra.sweep.dir={sweep}",
        cwd=root,
    )
    return sweep

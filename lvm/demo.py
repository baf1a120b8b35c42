"""`python -m lvm.demo`: the whole LVM loop on CPU, on data the repo makes itself (minutes, 2 cores).

corpus (videos, photos, pairs) → tiny VQGAN (trained, saved in the open-muse layout) → shards
→ LVM (`experiment=demo`) → held-out loss vs baselines → sequential and analogy prompting → PNG grid.
Everything lands in the run folder (logs/demo/runs/<time>/): corpus/, tokenizer/, shards/, lvm/,
prompts.png and summary.json.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich.console import Console
from rich.table import Table

from data_pipelines.common import ImageSentence, SkipCounter
from data_pipelines.demo_sentences import demo_sentences
from data_pipelines.synthetic import make_demo_corpus
from data_pipelines.to_shards import images_to_tensor, write_sentence_shards
from lvm.data.shards import read_sentences
from lvm.eval.heldout import heldout_report
from lvm.generation.prompting import analogy_prompting, sequential_prompting
from lvm.generation.sampler import SamplingConfig
from lvm.lit_module import LVMLitModule
from lvm.tokenizer.checkpoint import load_vqgan, save_vqgan
from lvm.tokenizer.preprocess import tensor_to_uint8
from lvm.tokenizer.train import fit_tokenizer
from lvm.tokenizer.vqgan import VQGANModel
from lvm.train import train

log = logging.getLogger(__name__)
KINDS = ("video", "paired", "sequence")


def corpus_frames(sentences: dict[str, list[ImageSentence]]) -> np.ndarray:
    """Every image of every sentence as one (N, H, W, 3) uint8 array (the tokenizer's training set)."""
    return np.stack([image for kind in sentences.values() for s in kind for image in s.images])


def write_shards(sentences: dict[str, list[ImageSentence]], vqgan: VQGANModel, out_dir: Path, vocab_size: int) -> None:
    """One shard folder with its manifest per kind: <out_dir>/<kind>/manifest.json."""
    for kind, items in sentences.items():
        write_sentence_shards(items, vqgan, out_dir / kind, max_samples_per_shard=64, vocab_size=vocab_size,
                              config={"builder": "lvm.demo", "kind": kind})


def compose_lvm_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """conf/train.yaml with experiment=demo, reading the shards and writing logs under `run_dir`."""
    overrides = ["experiment=demo", f"paths.data_dir={run_dir}", f"paths.output_dir={run_dir / 'lvm'}",
                 f"seed={cfg.seed}", *cfg.lvm_overrides]
    return hydra.compose("train", overrides=overrides)


def train_lvm(train_cfg: DictConfig) -> LVMLitModule:
    """Train with `lvm.train.train`, then reload the last checkpoint (what users would load)."""
    train(train_cfg)
    checkpoint = Path(train_cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return LVMLitModule.load_from_checkpoint(checkpoint, weights_only=True).eval()


def prompt_rows(
    model: torch.nn.Module, vqgan: VQGANModel, sentences: dict[str, list[ImageSentence]], cfg: DictConfig
) -> list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]]:
    """(label, prompt images, generated image, ground truth) for each demo prompt, greedy by default."""
    sampling = SamplingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for sentence in sentences["video"][: cfg.n_prompts]:
        frames = images_to_tensor(sentence.images[: cfg.n_context_frames + 1])
        generated = sequential_prompting(model, vqgan, frames[:-1], 1, sampling, generator=generator)[0, 0]
        rows.append(("next frame", sentence.images[: cfg.n_context_frames], tensor_to_uint8(generated),
                     sentence.images[cfg.n_context_frames]))
    for sentence in sentences["paired"][: cfg.n_prompts]:
        images = images_to_tensor(sentence.images)
        pairs = [(images[2 * i], images[2 * i + 1]) for i in range(cfg.n_examples)]
        query, target = images[2 * cfg.n_examples], sentence.images[2 * cfg.n_examples + 1]
        generated = analogy_prompting(model, vqgan, pairs, query, sampling, generator=generator)[0]
        rows.append((sentence.meta.get("task", "analogy"), sentence.images[: 2 * cfg.n_examples + 1],
                     tensor_to_uint8(generated), target))
    return rows


def save_grid(rows: list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]], path: Path, gap: int = 4) -> None:
    """One row per prompt: prompt images | generated | ground truth, with white gaps between the blocks."""
    size = rows[0][2].shape[0]
    n_prompt = max(len(r[1]) for r in rows)
    width = (n_prompt + 2) * size + 3 * gap
    canvas = np.full((len(rows) * (size + gap), width, 3), 255, np.uint8)
    for i, (_, prompt, generated, truth) in enumerate(rows):
        y = i * (size + gap)
        for j, image in enumerate(prompt):
            canvas[y : y + size, j * size : (j + 1) * size] = image
        x = n_prompt * size + gap
        canvas[y : y + size, x : x + size] = generated
        canvas[y : y + size, x + size + gap : x + 2 * size + gap] = truth
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(canvas).save(tmp)
    os.replace(tmp, path)


def print_summary(summary: dict) -> None:
    table = Table(title="LVM demo: held-out next-token loss (nats/token; lower is better)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tokenizer PSNR on held-out frames (dB)", f"{summary['tokenizer_psnr']:.2f}")
    table.add_row("LVM val loss (all kinds)", f"{summary['val_loss']:.3f}")
    table.add_row("LVM val perplexity", f"{summary['val_ppl']:.1f}")
    table.add_row("unigram baseline loss", f"{summary['unigram_loss']:.3f}")
    if "copy_last_frame_loss" in summary:
        table.add_row("LVM loss, video frames 2+", f"{summary['val_loss_video_after_first_frame']:.3f}")
        table.add_row("copy-last-frame baseline, video frames 2+", f"{summary['copy_last_frame_loss']:.3f}")
    Console().print(table)
    print(f"Corpus files skipped as unreadable: {summary['skipped_files']}")
    verdict = "beats" if summary["beats_unigram"] else "does NOT beat"
    print(f"The LVM {verdict} the unigram baseline; it "
          f"{'beats' if summary.get('beats_copy_last_frame') else 'does not beat'} copy-last-frame on video.")


def run_demo(cfg: DictConfig, run_dir: Path) -> dict:
    """Every stage of the demo in order; returns the summary written to summary.json."""
    started = time.perf_counter()
    timings = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        log.info("%s done in %.1f s", name, timings[name])

    corpus = make_demo_corpus(run_dir / "corpus", seed=cfg.seed, **cfg.corpus)
    skips = SkipCounter()  # unreadable files are reported by name as they are met, and counted here
    sentences = {split: demo_sentences(corpus, split, cfg.images_per_sentence, seed=cfg.seed, skips=skips)
                 for split in ("train", "val")}
    lap("corpus")

    vqgan_config = instantiate(cfg.tokenizer)
    vqgan, tokenizer_metrics = fit_tokenizer(
        corpus_frames(sentences["train"]), corpus_frames({"video": sentences["val"]["video"]}), vqgan_config,
        default_root_dir=str(run_dir / "tokenizer_training"), seed=cfg.seed, **cfg.tokenizer_training,
    )
    save_vqgan(vqgan, run_dir / "tokenizer")
    vqgan = load_vqgan(run_dir / "tokenizer")  # what users will load: proves the saved layout
    lap("tokenizer")

    train_cfg = compose_lvm_config(cfg, run_dir)
    vocab_size = train_cfg.model.vocab_size
    for split in ("train", "val"):
        write_shards(sentences[split], vqgan, run_dir / "shards" / split, vocab_size)
    lap("shards")

    module = train_lvm(train_cfg)
    lap("lvm")

    train_set = [s for k in KINDS for s in read_sentences(str(run_dir / "shards" / "train" / k), vocab_size)]
    val_set = [s for k in KINDS for s in read_sentences(str(run_dir / "shards" / "val" / k), vocab_size)]
    with torch.inference_mode():
        report = heldout_report(
            module.model, [s.tokens for s in val_set], [s.kind for s in val_set], [s.tokens for s in train_set],
            [s.kind for s in train_set], vqgan.config.tokens_per_image, vqgan.config.num_embeddings,
        )
        rows = prompt_rows(module.model, vqgan, sentences["val"], cfg.prompting)
    save_grid(rows, run_dir / "prompts.png")
    lap("evaluation")

    summary = {
        "tokenizer_psnr": tokenizer_metrics["psnr"],
        "tokenizer_codebook_usage": tokenizer_metrics["codebook_usage"],
        **report,
        "beats_unigram": report["val_loss"] < report["unigram_loss"],
        "beats_copy_last_frame": report.get("val_loss_video_after_first_frame", np.inf)
        < report.get("copy_last_frame_loss", -np.inf),
        "prompt_rows": [label for label, *_ in rows],
        "skipped_files": skips.n_skipped,
        "seconds": timings,
        "run_dir": str(run_dir),
    }
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, run_dir / "summary.json")
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    log.info("demo config:\n%s", OmegaConf.to_yaml(cfg))
    summary = run_demo(cfg, run_dir)
    print_summary(summary)
    print(f"Figure: {run_dir / 'prompts.png'}\nSummary: {run_dir / 'summary.json'}")


if __name__ == "__main__":
    main()

"""`python -m lvm.demo`: the whole LVM loop on CPU, on data the repo makes itself (minutes, 2 cores).

corpus (videos, photos, pairs) → the demo VQGAN (the weights shipped in `lvm/assets/demo_tokenizer`, or
trained here with `tokenizer_training.enabled=true`) → shards → LVM (`experiment=demo`, with a gallery of
held-out prompts in TensorBoard) → held-out loss vs baselines → greedy next-frame and analogy prompting on
every held-out prompt, scored in pixels against baselines → PNG grid.
Everything lands in the run folder (logs/demo/runs/<time>/): corpus/, tokenizer/, shards/, lvm/, prompts/
+ prompts.json (the held-out prompts, for `python -m lvm.app`), prompts.png and, last, summary.json.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lvm.core.atomic_files import write_json_atomic
from lvm.core.devices import parse_dtype
from lvm.core.errors import report_user_errors
from lvm.data.image_sentences import ImageSentence, write_sentence_shards
from lvm.data.shards import read_sentences
from lvm.eval.code_lookup import fit_code_lookups
from lvm.eval.demo_report import (
    heldout_prompts,
    pixel_targets,
    print_summary,
    prompt_rows,
    save_grid,
    write_prompt_files,
)
from lvm.eval.heldout import heldout_report
from lvm.eval.prompt_quality import encode_prompts, generate_next_images, pixel_report, teacher_forced_next_images
from lvm.generation.sampler import SamplingConfig
from lvm.media.images import images_to_tensor
from lvm.media.skips import SkipCounter
from lvm.model.config import RESERVED_IDS
from lvm.tokenizer.checkpoint import load_vqgan, save_vqgan
from lvm.tokenizer.codec import encode_images
from lvm.tokenizer.gray_flag import add_gray_flag
from lvm.tokenizer.training.code_persistence import code_persistence
from lvm.tokenizer.training.code_usage import CodeUsage
from lvm.tokenizer.training.fit import fit_tokenizer, tokenizer_round_trip
from lvm.tokenizer.vqgan import VQGANModel
from lvm.train import train
from lvm.training.lit_module import LVMLitModule

log = logging.getLogger(__name__)
KINDS = ("video", "paired", "sequence")
# The demo's VQGAN, pretrained once offline (README, "The demo tokenizer": the command and its time).
SHIPPED_TOKENIZER = Path(__file__).resolve().parent / "assets" / "demo_tokenizer"


def corpus_frames(sentences: dict[str, list[ImageSentence]]) -> np.ndarray:
    """Every image of every sentence as one (N, H, W, 3) uint8 array (the tokenizer's training set)."""
    return np.stack([image for kind in sentences.values() for s in kind for image in s.images])


def write_shards(sentences: dict[str, list[ImageSentence]], vqgan: VQGANModel, out_dir: Path, vocab_size: int) -> None:
    """One shard folder with its manifest per kind: <out_dir>/<kind>/manifest.json."""
    for kind, items in sentences.items():
        write_sentence_shards(
            items,
            vqgan,
            out_dir / kind,
            max_samples_per_shard=64,
            vocab_size=vocab_size,
            config={"builder": "lvm.demo", "kind": kind},
        )


def shipped_tokenizer_source(cfg: DictConfig) -> Path:
    """The VQGAN folder the run copies (`tokenizer_path`, default the shipped one), checked before any work."""
    source = Path(cfg.tokenizer_path or SHIPPED_TOKENIZER)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(
            f"tokenizer_path: {source}: no config.json (expected an open-muse VQGAN folder; the "
            f"shipped one is {SHIPPED_TOKENIZER})"
        )
    return source


def demo_tokenizer(
    cfg: DictConfig, sentences: dict[str, dict[str, list[ImageSentence]]], run_dir: Path
) -> tuple[VQGANModel, dict[str, float]]:
    """The run's VQGAN in `<run_dir>/tokenizer`: a copy of the shipped weights (`tokenizer_path`, default
    lvm/assets/demo_tokenizer), or, with `tokenizer_training.enabled`, one trained here on the corpus. Loaded
    back from that folder (what users load) and measured on the held-out images: `tokenizer_psnr` (video
    frames), `tokenizer_psnr_photos` (photo crops), `tokenizer_codebook_usage` (all held-out images),
    `tokenizer_code_persistence` (the share of unchanged patches of the held-out clips that keep their code from
    one frame to the next). With `gray_flag` the folder's VQGAN gets gray twins of its codes
    (lvm.tokenizer.gray_flag), so gray images tokenize to codes of their own and decode without tint."""
    folder = run_dir / "tokenizer"
    training = OmegaConf.to_container(cfg.tokenizer_training, resolve=True)
    if training.pop("enabled"):
        vqgan, _ = fit_tokenizer(
            corpus_frames(sentences["train"]),
            corpus_frames({"video": sentences["val"]["video"]}),
            instantiate(cfg.tokenizer),
            default_root_dir=str(run_dir / "tokenizer_training"),
            seed=cfg.seed,
            **training,
        )
        save_vqgan(vqgan, folder, dtype=parse_dtype(cfg.tokenizer_save_dtype, "tokenizer_save_dtype"))
    else:
        shutil.copytree(shipped_tokenizer_source(cfg), folder, dirs_exist_ok=True)
    vqgan = load_vqgan(folder)
    if cfg.gray_flag and not vqgan.config.gray_flag:
        vqgan = add_gray_flag(vqgan)
        save_vqgan(vqgan, folder, dtype=parse_dtype(cfg.tokenizer_save_dtype, "tokenizer_save_dtype"))
        vqgan = load_vqgan(folder)
    return vqgan, heldout_tokenizer_metrics(vqgan, sentences["val"])


def heldout_tokenizer_metrics(vqgan: VQGANModel, val: dict[str, list[ImageSentence]]) -> dict[str, float]:
    """The tokenizer's measures on the held-out sentences, each image encoded once: the video frames' and the
    photo crops' codes serve their PSNR round trips, the codebook usage (with the other held-out images) and
    the video's code persistence."""
    clips = np.stack([np.stack(s.images) for s in val["video"]])  # (N, T, R, R, 3)
    photos = np.stack([image for s in val["paired"] for image in s.images[0::2]])  # the x's: photo crops
    video_psnr, video_codes = tokenizer_round_trip(vqgan, clips.reshape(-1, *clips.shape[2:]))
    photo_psnr, photo_codes = tokenizer_round_trip(vqgan, photos)
    usage = CodeUsage(vqgan.config.num_embeddings)
    usage.update(video_codes)
    usage.update(photo_codes)
    others = [image for s in val["paired"] for image in s.images[1::2]]  # the y's: edges, gray, ...
    others += [image for kind in val if kind not in ("video", "paired") for s in val[kind] for image in s.images]
    if others:
        usage.update(encode_images(vqgan, images_to_tensor(others)))
    codebook_usage, code_perplexity = usage.compute()
    return {
        "tokenizer_psnr": video_psnr,
        "tokenizer_psnr_photos": photo_psnr,
        "tokenizer_codebook_usage": codebook_usage,
        "tokenizer_code_perplexity": code_perplexity,
        "tokenizer_code_persistence": code_persistence(vqgan, clips, codes=video_codes)[0],
    }


def compose_lvm_config(cfg: DictConfig, run_dir: Path, vqgan: VQGANModel) -> DictConfig:
    """conf/train.yaml with experiment=demo, the demo's model size (`lvm_model`) and steps (`lvm_max_steps`),
    reading the shards and writing logs under `run_dir`. The vocabulary (the tokenizer's codes + the 100 reserved
    ids), the sentence length and the image-position table (one row per token of an image) follow the tokenizer;
    the prompt gallery shows the held-out shards' prompts. `lvm_overrides` come last."""
    n = vqgan.config.tokens_per_image
    half_way = max(1, cfg.lvm_max_steps // 2)
    overrides = [
        "experiment=demo",
        *(f"model.{name}={value}" for name, value in cfg.lvm_model.items()),
        f"trainer.max_steps={cfg.lvm_max_steps}",
        f"trainer.val_check_interval={half_way}",
        f"callbacks.model_checkpoint.every_n_train_steps={half_way}",
        f"paths.data_dir={run_dir}",
        f"paths.output_dir={run_dir / 'lvm'}",
        f"seed={cfg.seed}",
        f"model.vocab_size={vqgan.config.num_embeddings + RESERVED_IDS}",
        f"model.image_positions={n}",
        f"data.tokens_per_image={n}",
        f"data.seq_len={cfg.images_per_sentence * n}",
    ]
    if cfg.gallery_every_n_steps is not None:
        sources = ", ".join(f"{kind}: {run_dir / 'shards' / 'val' / kind / 'manifest.json'}" for kind in KINDS)
        overrides += [
            "callbacks=gallery",
            f"callbacks.prompt_gallery.tokenizer_path={run_dir / 'tokenizer'}",
            f"callbacks.prompt_gallery.prompt_sources={{{sources}}}",
            f"callbacks.prompt_gallery.every_n_steps={cfg.gallery_every_n_steps}",
        ]
    return hydra.compose("train", overrides=[*overrides, *cfg.lvm_overrides])


def train_lvm(train_cfg: DictConfig) -> LVMLitModule:
    """Train with `lvm.train.train`, then reload the last checkpoint (what users would load)."""
    train(train_cfg)
    checkpoint = Path(train_cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return LVMLitModule.load_from_checkpoint(checkpoint, weights_only=True).eval()


def run_demo(cfg: DictConfig, run_dir: Path) -> dict:
    """Every stage of the demo in order; returns the summary written (last) to summary.json."""
    started = time.perf_counter()
    timings, peak_rss_mb = {}, {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        # The process's peak so far (Linux reports KiB); the budget is 2 GB for the whole run.
        peak_rss_mb[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        log.info("%s done in %.1f s (peak RSS so far %d MB)", name, timings[name], peak_rss_mb[name])

    if not cfg.tokenizer_training.enabled:
        shipped_tokenizer_source(cfg)  # a wrong tokenizer_path fails now, not after the corpus is made
    # The data stage is data_pipelines' (conf/demo.yaml names the two functions): lvm never imports it.
    make_corpus, build_sentences = instantiate(cfg.data_stage.make_corpus), instantiate(cfg.data_stage.sentences)
    corpus = make_corpus(run_dir / "corpus", seed=cfg.seed, **cfg.corpus)
    skips = SkipCounter()  # unreadable files are reported by name as they are met, and counted here
    sentences = {
        split: build_sentences(
            corpus,
            split,
            cfg.images_per_sentence,
            seed=cfg.seed,
            skips=skips,
            paired_epochs=cfg.paired_epochs if split == "train" else 1,
            video_epochs=cfg.video_epochs if split == "train" else None,
        )
        for split in ("train", "val")
    }
    lap("corpus")

    vqgan, tokenizer_metrics = demo_tokenizer(cfg, sentences, run_dir)
    lap("tokenizer")
    if cfg.tokenizer_only:  # how the shipped tokenizer is made: README, "The demo tokenizer"
        summary = {**tokenizer_metrics, "seconds": timings, "peak_rss_mb": peak_rss_mb, "run_dir": str(run_dir)}
        write_json_atomic(run_dir / "summary.json", summary)
        return summary

    train_cfg = compose_lvm_config(cfg, run_dir, vqgan)
    vocab_size = train_cfg.model.vocab_size
    for split in ("train", "val"):
        write_shards(sentences[split], vqgan, run_dir / "shards" / split, vocab_size)
    del sentences["train"]  # its images now live in the shards; the LVM stage gets the memory
    lap("shards")

    module = train_lvm(train_cfg)
    lap("lvm")

    train_set = [s for k in KINDS for s in read_sentences(str(run_dir / "shards" / "train" / k), vocab_size)]
    val_set = [s for k in KINDS for s in read_sentences(str(run_dir / "shards" / "val" / k), vocab_size)]
    prompts = heldout_prompts(sentences["val"], cfg.prompting.n_prompts)
    sampling = SamplingConfig(
        temperature=cfg.prompting.temperature, top_k=cfg.prompting.top_k, top_p=cfg.prompting.top_p
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.inference_mode():
        report = heldout_report(
            module.model,
            [s.tokens for s in val_set],
            [s.kind for s in val_set],
            [s.tokens for s in train_set],
            [s.kind for s in train_set],
            vqgan.config.tokens_per_image,
            vqgan.config.num_embeddings,
        )
        codes = {task: encode_prompts(vqgan, prompt_set) for task, prompt_set in prompts.items()}  # encoded once
        generated = {
            task: generate_next_images(module.model, vqgan, task_codes, sampling, generator)
            for task, task_codes in codes.items()
        }
        teacher_forced = {
            task: teacher_forced_next_images(module.model, vqgan, task_codes) for task, task_codes in codes.items()
        }
    lookups = fit_code_lookups(train_set, vqgan.config)
    pixels = pixel_report(generated, prompts, vqgan, lookups, teacher_forced, codes)
    rows = prompt_rows(prompts, generated, cfg.prompting.rows_per_task)
    save_grid(rows, run_dir / "prompts.png")
    write_prompt_files(prompts, run_dir)
    lap("evaluation")

    summary = {
        **tokenizer_metrics,
        **report,
        **pixels,
        "targets": pixel_targets(pixels),
        "beats_unigram": report["val_loss"] < report["unigram_loss"],
        "beats_copy_last_frame": report.get("val_loss_video_after_first_frame", np.inf)
        < report.get("copy_last_frame_loss", -np.inf),
        "prompt_rows": [label for label, *_ in rows],
        "skipped_files": skips.n_skipped,
        "seconds": timings,
        "peak_rss_mb": peak_rss_mb,
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / "summary.json", summary)  # last: its presence marks a finished run
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
@report_user_errors
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    log.info("demo config:\n%s", OmegaConf.to_yaml(cfg))
    summary = run_demo(cfg, run_dir)
    if cfg.tokenizer_only:
        print(
            f"Tokenizer: {run_dir / 'tokenizer'} — held-out PSNR {summary['tokenizer_psnr']:.2f} dB (video frames), "
            f"{summary['tokenizer_psnr_photos']:.2f} dB (photo crops), codebook usage "
            f"{summary['tokenizer_codebook_usage']:.0%}"
        )
        return
    print_summary(summary)
    print(f"Figure: {run_dir / 'prompts.png'}\nSummary: {run_dir / 'summary.json'}")


if __name__ == "__main__":
    main()

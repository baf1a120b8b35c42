"""The end-to-end demo on a miniature corpus: every stage runs, the summary holds real numbers (pixel
baselines checked against scikit-image on the files the demo wrote), the app's prompts.json is complete,
and the prompt gallery reaches TensorBoard."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from skimage.color import rgb2hsv
from skimage.metrics import peak_signal_noise_ratio
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lvm.data.image_sentences import ImageSentence
from lvm.demo import SHIPPED_TOKENIZER, compose_lvm_config, heldout_tokenizer_metrics, run_demo
from lvm.eval.demo_report import print_summary
from lvm.media.images import images_to_tensor
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.training.code_persistence import code_persistence
from lvm.tokenizer.training.fit import encoder_code_usage, evaluate_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"
TASKS = ("next_frame", "edges", "gray")  # the order of prompts.png's rows
# A tiny VQGAN trained for a few steps (16 tokens per image), so the test needs no shipped weights.
TINY = [
    "corpus.n_videos=6",
    "corpus.n_val_videos=1",
    "corpus.n_images=12",
    "corpus.n_val_images=8",
    "corpus.n_sequences=2",
    "corpus.n_val_sequences=1",
    "tokenizer=tiny",
    "tokenizer_training.enabled=true",
    "tokenizer_training.max_steps=6",
    "tokenizer_training.batch_size=8",
    "tokenizer_training.quantize_start=2",
    "tokenizer_training.lr_warmup_steps=1",
    "prompting.n_prompts=2",
    "prompting.rows_per_task=1",
    "gallery_every_n_steps=3",
    "lvm_overrides=['trainer.max_steps=6','trainer.val_check_interval=3','scheduler.warmup_steps=2',"
    "'callbacks.model_checkpoint.every_n_train_steps=3','trainer.enable_progress_bar=false']",
]


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("demo")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={run_dir}", *TINY])
        return run_dir, run_demo(cfg, run_dir)


def test_demo_runs_every_stage(demo_run):
    run_dir, summary = demo_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    for key in (
        "tokenizer_psnr",
        "tokenizer_psnr_photos",
        "tokenizer_codebook_usage",
        "val_loss",
        "val_ppl",
        "unigram_loss",
        "copy_last_frame_loss",
        "gray_saturation",
        "gray_saturation_ceiling",
    ):
        assert math.isfinite(summary[key]), key
    assert summary["val_ppl"] == math.exp(summary["val_loss"])
    assert 0.0 <= summary["tokenizer_code_persistence"] <= 1.0  # the clips' backgrounds hold still patches
    shots = 8 // 2  # analogy sentences of 8 images: 4 (x, y) pairs
    for key in ("answer_loss_by_shot", "answer_first_token_loss_by_shot"):
        assert len(summary[key]) == shots and all(math.isfinite(v) for v in summary[key]), key
    # every stage timed, with the process's peak memory so far: it can only grow, and torch alone is > 100 MB
    stages = ["corpus", "tokenizer", "shards", "lvm", "evaluation"]
    assert list(summary["seconds"]) == stages and list(summary["peak_rss_mb"]) == stages
    peaks = list(summary["peak_rss_mb"].values())
    assert peaks == sorted(peaks) and peaks[0] > 100
    # the tokenizer trained here is in the open-muse layout with the gray flag (its 256 codes and their gray
    # twins), so the gray truths' round trip is exactly gray; the LVM left checkpoints and TensorBoard logs
    tokenizer_config = json.loads((run_dir / "tokenizer" / "config.json").read_text())
    assert tokenizer_config["gray_flag"] and tokenizer_config["num_embeddings"] == 2 * 256
    assert summary["gray_saturation_ceiling"] == 0.0
    checkpoint = torch.load(run_dir / "lvm" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # the LVM's vocabulary follows the tokenizer: its 512 codes + the 100 reserved ids
    assert checkpoint["state_dict"]["model.embed_tokens.weight"].shape[0] == 512 + 100
    for kind in ("video", "paired", "sequence"):
        manifest = json.loads((run_dir / "shards" / "val" / kind / "manifest.json").read_text())
        assert manifest["tokens"] == manifest["samples"] * 8 * 16
    # one row per task, each: 7 prompt images | generated | truth, 64 px
    grid = read_png(run_dir / "prompts.png")
    assert grid.shape == (3 * (64 + 4), 9 * 64 + 3 * 4, 3)
    assert summary["prompt_rows"] == list(TASKS)


def test_a_second_run_with_the_same_seed_repeats_every_figure_and_the_picture(demo_run, tmp_path):
    """Same seed, same corpus bytes, same tokenizer, same LVM: what a reader compares across runs is the code."""
    run_dir, summary = demo_run
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        again = run_demo(compose("demo", overrides=[f"paths.output_dir={tmp_path}", *TINY]), tmp_path)
    varying = {"seconds", "peak_rss_mb", "run_dir"}
    assert {k: v for k, v in again.items() if k not in varying} == {
        k: v for k, v in summary.items() if k not in varying
    }
    assert np.array_equal(read_png(tmp_path / "prompts.png"), read_png(run_dir / "prompts.png"))


def test_the_printed_summary_gives_every_baseline_with_its_interval(demo_run, capsys):
    _, summary = demo_run
    print_summary(summary)
    printed = capsys.readouterr().out
    assert summary["psnr_gain_interval"].keys() == summary["generated_psnr"].keys()
    for task, baselines in summary["psnr_gain_interval"].items():
        for name, (low, high) in baselines.items():
            psnr = summary["baseline_psnr"][task][name]
            assert f"{name} {psnr:.2f} [{low:+.2f}, {high:+.2f}]" in printed, (task, name)


def test_pixel_figures_have_every_task_and_baseline(demo_run):
    _, summary = demo_run
    assert set(summary["generated_psnr"]) == set(TASKS)
    assert set(summary["baseline_psnr"]["next_frame"]) == {"copy_last_frame", "mean_colour", "tokenizer_ceiling"}
    assert set(summary["baseline_psnr"]["gray"]) == {"copy_query", "tokenizer_ceiling", "code_lookup"}
    assert set(summary["baseline_psnr"]["edges"]) == {"black", "copy_query", "tokenizer_ceiling", "code_lookup"}
    assert summary["n_prompts"] == {"next_frame": 2, "gray": 2, "edges": 2}
    assert set(summary["teacher_forced_psnr"]) == set(TASKS)
    assert 0.0 <= summary["teacher_forced_gray_saturation"] <= 1.0
    assert set(summary["targets"]) == set(TASKS) and all(isinstance(v, bool) for v in summary["targets"].values())


def test_prompt_files_and_baselines_agree_with_scikit_image(demo_run):
    """prompts.json (the app's examples) lists every held-out prompt as PNGs; the copy-last-frame, copy-query
    and black baselines recomputed from those files with scikit-image equal the summary's."""
    run_dir, summary = demo_run
    index = json.loads((run_dir / "prompts.json").read_text())
    assert index["version"] == 1 and len(index["next_frame"]) == 2 and len(index["analogy"]) == 4
    frames = [[read_png(run_dir / p) for p in item["frames"]] for item in index["next_frame"]]
    assert all(len(f) == 7 and f[0].shape == (64, 64, 3) for f in frames)
    truths = np.stack([read_png(run_dir / item["target"]) for item in index["next_frame"]])
    last = np.stack([f[-1] for f in frames])
    expected = summary["baseline_psnr"]["next_frame"]["copy_last_frame"]
    assert peak_signal_noise_ratio(truths, last, data_range=255) == pytest.approx(expected, abs=1e-3)
    for task in ("gray", "edges"):
        items = [item for item in index["analogy"] if item["task"] == task]
        assert all(len(item["examples"]) == 3 for item in items)
        truth = np.stack([read_png(run_dir / item["target"]) for item in items])
        query = np.stack([read_png(run_dir / item["query"]) for item in items])
        assert peak_signal_noise_ratio(truth, query, data_range=255) == pytest.approx(
            summary["baseline_psnr"][task]["copy_query"], abs=1e-3
        )
    edges = np.stack([read_png(run_dir / item["target"]) for item in index["analogy"] if item["task"] == "edges"])
    assert peak_signal_noise_ratio(edges, np.zeros_like(edges), data_range=255) == pytest.approx(
        summary["baseline_psnr"]["edges"]["black"], abs=1e-3
    )


def test_gray_saturation_ceiling_is_the_tokenizers_round_trip(demo_run):
    """The saturation an LVM writing exactly the true codes would show: the run's VQGAN round trip of the gray
    truths (read from the files the demo wrote), measured with scikit-image's HSV conversion."""
    run_dir, summary = demo_run
    index = json.loads((run_dir / "prompts.json").read_text())
    truth = [read_png(run_dir / item["target"]) for item in index["analogy"] if item["task"] == "gray"]
    vqgan = load_vqgan(run_dir / "tokenizer")
    with torch.no_grad():
        round_trip = vqgan(images_to_tensor(truth))[0].clamp(0, 1)
    round_trip = (round_trip * 255).round().permute(0, 2, 3, 1).numpy() / 255
    assert rgb2hsv(round_trip)[..., 1].mean() == pytest.approx(summary["gray_saturation_ceiling"], abs=1e-4)


def test_prompt_gallery_reaches_tensorboard(demo_run):
    run_dir, _ = demo_run
    events = sorted((run_dir / "lvm" / "tensorboard").rglob("events.out.tfevents.*"))
    tags: dict[str, list[int]] = {}
    for path in events:
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["images"]:
            tags.setdefault(tag, []).extend(e.step for e in accumulator.Images(tag))
        for tag in accumulator.Tags()["scalars"]:
            tags.setdefault(tag, []).extend(e.step for e in accumulator.Scalars(tag))
    for task in TASKS:
        assert sorted(set(tags[f"gallery/{task}"])) == [3, 6]
        assert sorted(set(tags[f"gallery/psnr_{task}"])) == [3, 6]


def test_the_demos_lvm_size_and_steps_compose_and_lvm_overrides_come_last(tmp_path):
    """conf/demo.yaml's lvm_model and lvm_max_steps reach the LVM's config (validation and checkpoints at
    half-way and at the end), its vocabulary and image-position table follow the tokenizer; lvm_overrides still
    win over all of them."""
    vqgan = load_vqgan(SHIPPED_TOKENIZER)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tmp_path}"])
        train_cfg = compose_lvm_config(cfg, tmp_path, vqgan)
        changed = compose("demo", overrides=[f"paths.output_dir={tmp_path}", "lvm_overrides=['model.num_layers=2']"])
        changed_cfg = compose_lvm_config(changed, tmp_path, vqgan)
    model = train_cfg.model
    assert (model.num_layers, model.hidden_size, model.intermediate_size) == (
        cfg.lvm_model.num_layers,
        cfg.lvm_model.hidden_size,
        cfg.lvm_model.intermediate_size,
    )
    assert model.vocab_size == vqgan.config.num_embeddings + 100 and train_cfg.data.seq_len == 8 * 64
    assert model.image_positions == vqgan.config.tokens_per_image == 64  # a row per place in an image
    assert train_cfg.trainer.max_steps == cfg.lvm_max_steps
    half_way = cfg.lvm_max_steps // 2
    assert train_cfg.trainer.val_check_interval == half_way
    assert train_cfg.callbacks.model_checkpoint.every_n_train_steps == half_way
    assert changed_cfg.model.num_layers == 2 and changed_cfg.model.hidden_size == cfg.lvm_model.hidden_size


def test_heldout_tokenizer_metrics_encode_once_and_agree_with_separate_passes(vqgan_dir):
    """The shared-codes measures equal the three separate ones: a round trip per image set, the encoder's
    codebook usage over every held-out image and a persistence pass that encodes the clips itself."""
    vqgan = load_vqgan(vqgan_dir)
    size = vqgan.config.resolution
    rng = np.random.default_rng(0)

    def sentence(kind: str, n: int) -> ImageSentence:
        return ImageSentence([rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)], kind, [])

    clips = [sentence("video", 4) for _ in range(3)]
    still = clips[0].images[0]
    clips[0].images[1] = still.copy()  # an unchanged frame: persistence has still patches to count
    val = {"video": clips, "paired": [sentence("paired", 4) for _ in range(2)], "sequence": [sentence("sequence", 3)]}
    metrics = heldout_tokenizer_metrics(vqgan, val)

    frames = np.stack([image for s in clips for image in s.images])
    photos = np.stack([image for s in val["paired"] for image in s.images[0::2]])
    everything = np.stack([image for kind in val.values() for s in kind for image in s.images])
    usage, perplexity = encoder_code_usage(vqgan, everything)
    assert metrics["tokenizer_psnr"] == pytest.approx(evaluate_tokenizer(vqgan, frames)["psnr"], abs=1e-4)
    assert metrics["tokenizer_psnr_photos"] == pytest.approx(evaluate_tokenizer(vqgan, photos)["psnr"], abs=1e-4)
    assert metrics["tokenizer_codebook_usage"] == pytest.approx(usage)
    assert metrics["tokenizer_code_perplexity"] == pytest.approx(perplexity)
    clip_array = np.stack([np.stack(s.images) for s in clips])
    assert metrics["tokenizer_code_persistence"] == pytest.approx(code_persistence(vqgan, clip_array)[0])
    assert metrics["tokenizer_code_persistence"] > 0  # the copied frame's patches kept their codes

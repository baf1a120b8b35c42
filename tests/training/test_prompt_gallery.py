"""The prompt gallery (lvm/training/prompt_gallery.py) in real `lvm.train` fits on tiny shards: what lands in the
TensorBoard event file, the PSNR recomputed independently, when it runs, that training is untouched by it."""

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lvm.data.shards import ShardWriter, VisualSentence, read_sentences
from lvm.eval.prompt_quality import set_psnr, task_of
from lvm.generation.prompting import continue_image_codes
from lvm.generation.sampler import SamplingConfig
from lvm.interop.pretrained import load_model
from lvm.tokenizer import VQGANModel, load_vqgan, save_vqgan
from lvm.tokenizer.checkpoint import read_config
from lvm.tokenizer.codec import decode_codes
from lvm.train import train
from lvm.training.prompt_gallery import PromptGallery, load_prompts
from tests.conftest import DEMO_SHARDS
from tests.tokenizer.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SIDE, PADDING, CODES = 16, 2, 256  # the gallery's VQGAN: 16 px images of 4×4 = 16 codes (the demo shards' size)
FAST = [
    "experiment=demo",
    *DEMO_SHARDS,
    "trainer.val_check_interval=100",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "scheduler.warmup_steps=2",
    "scheduler.decay_steps=8",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on shared cores: a second OpenMP thread mostly waits for a busy core (a 16-token greedy
    decode took 2-6 s with 2 threads against 0.05 s with 1 while another job ran), so these tests use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vqgan16_dir(tmp_path_factory) -> Path:
    """A tiny VQGAN whose images are 16 codes below 256, so the demo shards are its codes."""
    torch.manual_seed(0)
    model = VQGANModel(tiny_config(resolution=SIDE, num_embeddings=CODES, attn_resolutions=()))
    with torch.no_grad():  # spread the codebook so that different codes decode to different pixels
        model.quantize.embedding.weight.normal_(0.0, 0.5)
    return save_vqgan(model, tmp_path_factory.mktemp("vqgan16"))


def write_source(folder: Path, sentences: list[VisualSentence]) -> Path:
    with ShardWriter(folder, max_samples_per_shard=2) as writer:  # 2 per shard: prompts span shards
        for sentence in sentences:
            writer.write(sentence)
    return folder / "manifest.json"


def sentence(kind: str, n_images: int, rng: np.random.Generator, **meta) -> VisualSentence:
    tokens = rng.integers(0, CODES, 16 * n_images).astype(np.uint16)
    return VisualSentence(tokens, kind, [f"{kind}.synthetic"], n_images, meta)


@pytest.fixture(scope="module")
def prompt_sources(tmp_path_factory) -> dict[str, str]:
    """video: runs of 4, 3, 4 frames (ragged contexts); paired: gray/edges pairs, 2 pairs each, alternating."""
    root, rng = tmp_path_factory.mktemp("prompts"), np.random.default_rng(1)
    video = write_source(root / "video", [sentence("video", n, rng) for n in (4, 3, 4)])
    paired = write_source(root / "paired", [sentence("paired", 4, rng, task=t) for t in ("gray", "edges") * 3])
    return {"video": str(video), "paired": str(paired)}


def read_events(folder: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, np.ndarray]]]:
    """The TensorBoard event files of a run folder read back: (scalars, images), each tag → step → value
    (images as the (H, W, 3) uint8 arrays the PNGs decode to)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in tags["scalars"]}
    images = {
        tag: {
            e.step: np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
            for e in events.Images(tag)
        }
        for tag in tags["images"]
    }
    return scalars, images


def compose_train(data_dir: Path, output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train", overrides=[f"paths.data_dir={data_dir}", f"paths.output_dir={output_dir}", *FAST, *overrides]
        )


def gallery_overrides(vqgan: Path, sources: dict[str, str], every_n_steps: int, n_prompts: int = 2) -> list[str]:
    """The command-line syntax conf/callbacks/gallery.yaml documents."""
    listed = ", ".join(f"{name}: {path}" for name, path in sources.items())
    return [
        "callbacks=gallery",
        f"callbacks.prompt_gallery.tokenizer_path={vqgan}",
        f"callbacks.prompt_gallery.prompt_sources={{{listed}}}",
        f"callbacks.prompt_gallery.every_n_steps={every_n_steps}",
        f"callbacks.prompt_gallery.n_prompts={n_prompts}",
    ]


def expected_prompts(sources: dict[str, str], n_prompts: int) -> dict[str, list[torch.Tensor]]:
    """Task → codes (n_images, 16) of the first `n_prompts` sentences of each task of each source, read
    without the gallery's loader."""
    out: dict[str, list[torch.Tensor]] = {}
    for spec in sources.values():
        for s in read_sentences(spec):
            rows = out.setdefault(task_of(s.kind, s.meta), [])
            if sum(1 for r in rows if r.source == spec) < n_prompts:
                codes = torch.from_numpy(s.tokens.astype(np.int64)).view(s.n_images, -1)
                rows.append(SimpleNamespace(codes=codes, source=spec))
    return {task: [r.codes for r in rows] for task, rows in out.items()}


def test_fit_logs_gallery_images_and_psnr_equal_to_an_independent_recomputation(
    demo_data_dir, vqgan16_dir, prompt_sources, tmp_path
):
    cfg = compose_train(
        demo_data_dir,
        tmp_path,
        "trainer.max_steps=4",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        *gallery_overrides(vqgan16_dir, prompt_sources, every_n_steps=2),
    )
    train(cfg)
    scalars, images = read_events(tmp_path / "tensorboard")
    prompts = expected_prompts(prompt_sources, n_prompts=2)
    assert sorted(prompts) == ["edges", "gray", "next_frame"]
    assert {len(p) for p in prompts.values()} == {2}
    for task, rows in prompts.items():
        # steps 2 and 4; at train end step 4 had already been shown, so no third image
        assert sorted(images[f"gallery/{task}"]) == [2, 4], task
        columns = max(len(r) for r in rows) + 1  # context images (n − 1) + generated + truth
        shape = (len(rows) * (SIDE + PADDING) + PADDING, columns * (SIDE + PADDING) + PADDING, 3)
        assert {image.shape for image in images[f"gallery/{task}"].values()} == {shape}, task
        psnr = scalars[f"gallery/psnr_{task}"]
        assert sorted(psnr) == [2, 4] and np.isfinite(list(psnr.values())).all(), task
    seconds = scalars["gallery/seconds"]
    assert sorted(seconds) == [2, 4] and min(seconds.values()) > 0

    # Step 4 is the last step: recompute its gallery from the step-4 checkpoint, without the callback.
    model = load_model(tmp_path / "checkpoints" / "last.ckpt")
    vqgan = load_vqgan(vqgan16_dir)
    greedy = SamplingConfig(temperature=0.0, num_vq_codes=CODES)
    for task, rows in prompts.items():
        new = continue_image_codes(model, [r[:-1] for r in rows], 1, greedy)[:, 0, 0]  # (B, 16)
        generated, truth = decode_codes(vqgan, new), decode_codes(vqgan, torch.stack([r[-1] for r in rows]))
        assert scalars[f"gallery/psnr_{task}"][4] == pytest.approx(set_psnr(generated, truth), rel=1e-5), task
        # The grid's last two columns of the first row: generated, then truth (uint8 in the event file).
        image = images[f"gallery/{task}"][4]
        width = image.shape[1]
        for column, expected in ((2, generated[0]), (1, truth[0])):
            left = width - column * (SIDE + PADDING)
            tile = torch.from_numpy(image[PADDING : PADDING + SIDE, left : left + SIDE].astype(np.float32) / 255)
            assert torch.allclose(tile.permute(2, 0, 1), expected, atol=1 / 255 + 1e-6), (task, column)


def test_training_is_unchanged_by_the_gallery_and_the_model_is_back_in_train_mode(
    demo_data_dir, vqgan16_dir, prompt_sources, tmp_path, monkeypatch
):
    shown = []
    log_gallery = PromptGallery.log_gallery

    def checked(self, trainer, pl_module):
        log_gallery(self, trainer, pl_module)
        assert all(module.training for module in pl_module.modules())
        shown.append(trainer.global_step)

    monkeypatch.setattr(PromptGallery, "log_gallery", checked)
    common = ["trainer.max_steps=3", "callbacks.model_checkpoint.every_n_train_steps=3"]
    train(compose_train(demo_data_dir, tmp_path / "plain", *common))
    train(
        compose_train(
            demo_data_dir,
            tmp_path / "gallery",
            *common,
            *gallery_overrides(vqgan16_dir, prompt_sources, every_n_steps=1),
        )
    )
    assert shown == [1, 2, 3]

    def losses(run: Path) -> dict[int, float]:
        return read_events(run / "tensorboard")[0]["train/loss"]

    assert sorted(losses(tmp_path / "plain")) == [0, 1, 2]
    assert losses(tmp_path / "gallery") == losses(tmp_path / "plain")  # exactly
    plain, gallery = (
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in ("plain", "gallery")
    )
    assert plain.keys() == gallery.keys() and all(torch.equal(plain[k], gallery[k]) for k in plain)


def test_the_default_callbacks_hold_no_gallery_and_building_one_reads_nothing(tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "experiment=demo"])
    assert "prompt_gallery" not in cfg.callbacks
    # Paths that do not exist: nothing is opened before setup.
    gallery = PromptGallery(str(tmp_path / "no_vqgan"), {"video": str(tmp_path / "none.json")})
    assert gallery.prompts is None and gallery.vqgan is None


class RecordingLogger:
    """Stands in for a Lightning logger: records the steps metrics are logged at."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.steps.append(step)

    def save(self) -> None:
        pass


def shown_steps(gallery: PromptGallery, batch_end_steps: list[int], monkeypatch) -> list[int]:
    """The steps a gallery runs at when batches end at these global steps, then training ends."""
    monkeypatch.setattr(gallery, "run", lambda pl_module: {})
    logger = RecordingLogger()
    trainer = SimpleNamespace(global_step=0, is_global_zero=True, loggers=[logger])
    for step in batch_end_steps:
        trainer.global_step = step
        gallery.on_train_batch_end(trainer, None, None, None, 0)
    gallery.on_train_end(trainer, None)
    return logger.steps


def test_every_n_steps_counts_optimizer_steps_and_zero_means_train_end_only(monkeypatch):
    accumulated = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # 2 batches per optimizer step
    assert shown_steps(PromptGallery("vqgan", {"v": "x"}, every_n_steps=2), accumulated, monkeypatch) == [2, 4, 5]
    assert shown_steps(PromptGallery("vqgan", {"v": "x"}, every_n_steps=2), accumulated[:-2], monkeypatch) == [2, 4]
    assert shown_steps(PromptGallery("vqgan", {"v": "x"}, every_n_steps=0), accumulated, monkeypatch) == [5]
    assert shown_steps(
        PromptGallery("vqgan", {"v": "x"}, every_n_steps=2, log_at_train_end=False), accumulated, monkeypatch
    ) == [2, 4]
    with pytest.raises(ValueError, match="would never run"):
        PromptGallery("vqgan", {"v": "x"}, every_n_steps=0, log_at_train_end=False)
    with pytest.raises(ValueError, match="every_n_steps must be ≥ 0"):
        PromptGallery("vqgan", {"v": "x"}, every_n_steps=-1)


def test_prompts_take_the_first_sentences_of_each_task(vqgan16_dir, prompt_sources):
    prompts = load_prompts(prompt_sources, 2, read_config(vqgan16_dir))
    expected = expected_prompts(prompt_sources, 2)
    assert list(prompts) == ["next_frame", "gray", "edges"]  # order of first appearance
    for task, rows in expected.items():
        assert [
            torch.equal(p.context, r[:-1]) and torch.equal(p.truth, r[-1]) for p, r in zip(prompts[task], rows)
        ] == [True, True]
    # a data config's source entries ({path: ...}) work as well as plain paths
    as_entries = load_prompts({k: {"path": v} for k, v in prompt_sources.items()}, 1, read_config(vqgan16_dir))
    assert {task: len(p) for task, p in as_entries.items()} == {"next_frame": 1, "gray": 1, "edges": 1}


def test_bad_prompt_sources_are_refused_naming_the_source(vqgan_dir, vqgan16_dir, prompt_sources, tmp_path):
    config = read_config(vqgan16_dir)
    empty = write_source(tmp_path / "empty", [])
    with pytest.raises(ValueError, match=f"prompt source 'empty' {empty}: holds no sentences"):
        load_prompts({"empty": str(empty)}, 2, config)
    single = write_source(tmp_path / "single", [sentence("image", 1, np.random.default_rng(0))])
    with pytest.raises(
        ValueError,
        match=rf"'single' {tmp_path}/single/shard-000000.tar: sample 000000000 holds 1 "
        rf"image; a gallery prompt needs at least 2",
    ):
        load_prompts({"single": str(single)}, 2, config)
    # The 32 px test VQGAN makes 64 codes per image; the shards hold 16: refused in setup, before any fit.
    gallery = PromptGallery(str(vqgan_dir), prompt_sources)
    trainer = SimpleNamespace(strategy=None, loggers=[])
    with pytest.raises(
        ValueError,
        match=rf"'video' .*: the sentence has 16 tokens per image \(4 images\) but the "
        rf"VQGAN makes 64 tokens per image \(tokenizer {vqgan_dir}\)",
    ):
        gallery.setup(trainer, None, "fit")

"""A gallery of held-out visual prompts in TensorBoard while training (`conf/callbacks/gallery.yaml`).

Every `every_n_steps` optimizer steps (and at the end of training) the current model continues a fixed set of
held-out prompts: the first sentences of each prompt source, all their images but the last as the context, the
last one as the truth. Global rank zero alone runs them, greedily, one batch per task on the KV-cache engine,
in eval mode under `torch.inference_mode()`, and logs per task

    gallery/<task>        an image: one row per prompt, context images | generated | truth   (TensorBoard)
    gallery/psnr_<task>   PSNR (dB) of the generated images against the decoded truth        (every logger)
    gallery/seconds       the wall time of the whole gallery                                 (every logger)

Tasks are `lvm.eval.prompt_quality.task_of`'s: `next_frame` for video and sequence sentences, the paired
task (`gray`, `edges`, ...) for paired annotations. Shards hold only codes, so the "truth" is the tokenizer's
reconstruction of the last image: the PSNR measures the LM, not the VQGAN.

The gallery touches neither the weights nor any random state training uses (greedy decoding; sampling, when
asked for, draws from the gallery's own `torch.Generator`), so a run logs the same losses with or without it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn

from lvm.data.manifest import expand_sources
from lvm.data.shards import DEFAULT_VOCAB_SIZE, iter_shard
from lvm.eval.prompt_quality import set_psnr, task_of
from lvm.generation.engine import GenerationEngine
from lvm.generation.prompting import continue_image_codes, restrict_to_codebook
from lvm.generation.sampler import SamplingConfig
from lvm.tokenizer import load_vqgan
from lvm.tokenizer.checkpoint import read_config
from lvm.tokenizer.codec import decode_codes
from lvm.tokenizer.grid import sentence_codes, tile_images
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel
from lvm.training.strategies import FSDP2Strategy


@dataclass
class GalleryPrompt:
    """One held-out prompt: codes of its context images (n_context, n) int64 and of the image that follows
    them, the truth (n,) int64; `where` names the shard sample it came from."""

    context: torch.Tensor
    truth: torch.Tensor
    where: str


def source_path(spec: str | Mapping) -> str:
    """A prompt source's shard spec: a path (manifest.json, folder, glob) or a data source entry with a
    `path` (as `data.val_sources` holds them)."""
    if isinstance(spec, Mapping):
        if "path" not in spec:
            raise ValueError(f"prompt source {dict(spec)!r} has no field 'path'")
        return str(spec["path"])
    return str(spec)


def load_prompts(
    sources: Mapping[str, str | Mapping],
    n_prompts: int,
    tokenizer: VQGANConfig,
    tokenizer_path: str = "the tokenizer",
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    scan_limit: int = 1000,
) -> dict[str, list[GalleryPrompt]]:
    """Task → its prompts, tasks in order of first appearance: from each source the first `n_prompts`
    sentences of every task among the source's first `scan_limit` sentences (shards in sorted order).

    Raises ValueError naming the source when it holds no sentences, when a chosen sentence has fewer than 2
    images, or when its images are not the tokenizer's `tokens_per_image` codes below `num_embeddings`.
    """
    prompts: dict[str, list[GalleryPrompt]] = {}
    for name, spec in sources.items():
        path = source_path(spec)
        taken: dict[str, int] = {}
        scanned = 0
        expected = "expected shards of visual sentences with at least 2 images each"
        try:
            shards = expand_sources(path)
        except FileNotFoundError as err:  # a glob matching nothing, a manifest listing no shards
            raise ValueError(f"prompt source '{name}' {path}: holds no sentences ({err}); {expected}") from None
        # Lazily, shard by shard: a source may be a large validation set, and only its start is needed.
        for shard in shards:
            for sentence in iter_shard(shard, vocab_size):
                scanned += 1
                task = task_of(sentence.kind, sentence.meta)
                if taken.get(task, 0) < n_prompts:
                    where = f"prompt source '{name}' {shard}: sample {sentence.key}"
                    if sentence.n_images < 2:
                        raise ValueError(
                            f"{where} holds {sentence.n_images} image; a gallery prompt needs at least "
                            f"2 (context images, then the truth)"
                        )
                    try:
                        codes = sentence_codes(sentence.tokens, sentence.n_images, tokenizer, where)
                    except ValueError as err:
                        raise ValueError(f"{err} (tokenizer {tokenizer_path})") from None
                    prompts.setdefault(task, []).append(GalleryPrompt(codes[:-1], codes[-1], where))
                    taken[task] = taken.get(task, 0) + 1
                if scanned >= scan_limit:
                    break
            if scanned >= scan_limit:
                break
        if scanned == 0:
            raise ValueError(f"prompt source '{name}' {path}: holds no sentences; {expected}")
    return prompts


def gallery_grid(
    contexts: list[torch.Tensor], generated: torch.Tensor, truth: torch.Tensor, padding: int = 2
) -> torch.Tensor:
    """One picture of a task's prompts (3, H', W') in [0, 1]: row i is contexts[i] (n_i, 3, H, W) | generated[i]
    | truth[i] (each (B, 3, H, W)), with `padding` white pixels between tiles. Shorter contexts are padded with
    white tiles on the left, so the generated and true images line up in the last two columns."""
    width = max(len(c) for c in contexts)
    blank = torch.ones_like(truth[0])
    tiles = [torch.stack([blank] * (width - len(c)) + [*c, g, t]) for c, g, t in zip(contexts, generated, truth)]
    return tile_images(torch.cat(tiles), columns=width + 2, padding=padding, pad_value=1.0)


class PromptGallery(pl.Callback):
    """Logs the current model's answers to fixed held-out visual prompts (module docstring) during `fit`.

    Args:
        tokenizer_path: the VQGAN folder the shards were tokenized with (open-muse layout).
        prompt_sources: name → shard spec (a manifest.json, shard folder or glob, or a `{path: ...}` entry such
            as `data.val_sources` holds).
        every_n_steps: run after every N-th optimizer step (once per step, whatever the gradient
            accumulation); 0 = only at the end of training.
        n_prompts: prompts per task per source (the source's first sentences of that task).
        vocab_size: the LM's vocabulary (token ids in the shards are checked against it).
        log_at_train_end: also run when training ends, unless the last step already ran it.
        temperature: 0 = greedy; above 0 samples from the gallery's own generator, seeded `seed + step`.
        scan_limit: sentences read per source at most while looking for each task's first prompts.
        padding: white pixels between the tiles of a grid.

    Nothing is read at construction: the prompts are read and checked against the tokenizer's config in
    `setup` (on every rank, so a bad source stops all ranks alike), the VQGAN weights are loaded on rank zero
    at the first gallery, onto the module's device.
    """

    def __init__(
        self,
        tokenizer_path: str,
        prompt_sources: Mapping[str, str | Mapping],
        every_n_steps: int = 200,
        n_prompts: int = 4,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        log_at_train_end: bool = True,
        temperature: float = 0.0,
        seed: int = 0,
        scan_limit: int = 1000,
        padding: int = 2,
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"PromptGallery: every_n_steps must be ≥ 0 (0 = only at train end), got {every_n_steps}")
        if every_n_steps == 0 and not log_at_train_end:
            raise ValueError(
                "PromptGallery: every_n_steps=0 and log_at_train_end=false would never run it; to turn "
                "the gallery off leave the callback out (callbacks=default)"
            )
        if n_prompts < 1 or scan_limit < 1:
            raise ValueError(f"PromptGallery: n_prompts and scan_limit must be ≥ 1, got {n_prompts} and {scan_limit}")
        if not prompt_sources:
            raise ValueError("PromptGallery: prompt_sources is empty; expected name → shard spec")
        self.tokenizer_path = str(tokenizer_path)
        self.prompt_sources = {str(name): spec for name, spec in prompt_sources.items()}
        self.every_n_steps = every_n_steps
        self.n_prompts = n_prompts
        self.vocab_size = vocab_size
        self.log_at_train_end = log_at_train_end
        self.sampling = SamplingConfig(temperature=temperature)
        self.seed = seed
        self.scan_limit = scan_limit
        self.padding = padding
        self.prompts: dict[str, list[GalleryPrompt]] | None = None
        self.vqgan: VQGANModel | None = None
        # Per task: the decoded context images of each prompt [(n_context, 3, H, W)] and the truth (B, 3, H, W),
        # on the CPU; decoded once, at the first gallery.
        self._pictures: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {}
        self._last_step = -1  # the step the last gallery showed: once per step under gradient accumulation

    # -- Lightning hooks ------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.prompts is not None:
            return
        if isinstance(trainer.strategy, FSDP2Strategy):
            raise ValueError(
                "PromptGallery runs the model on rank zero alone, which FSDP's sharded weights cannot "
                "do; use it with the cpu, gpu or ddp trainers"
            )
        # The config alone (no weights) is enough to check that the prompts are this tokenizer's codes.
        config = read_config(self.tokenizer_path)
        self.prompts = load_prompts(
            self.prompt_sources, self.n_prompts, config, self.tokenizer_path, self.vocab_size, self.scan_limit
        )
        if not trainer.loggers:
            rank_zero_warn("PromptGallery: the trainer has no logger, so the gallery has nowhere to go")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # global_step counts optimizer steps: with gradient accumulation several batches end on one step.
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.log_gallery(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_at_train_end and trainer.global_step != self._last_step:
            self.log_gallery(trainer, pl_module)

    # -- the gallery ----------------------------------------------------------------------------------------
    def log_gallery(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run the gallery on `pl_module.model` and log it (rank zero only; other ranks return at once)."""
        self._last_step = step = trainer.global_step
        if not trainer.is_global_zero or not trainer.loggers:
            return
        start = time.perf_counter()
        results = self.run(pl_module)
        metrics = {f"gallery/psnr_{task}": psnr for task, (_, psnr) in results.items()}
        metrics["gallery/seconds"] = time.perf_counter() - start
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for task, (grid, _) in results.items():
                    logger.experiment.add_image(f"gallery/{task}", grid, step)
            logger.log_metrics(metrics, step=step)
            logger.save()  # visible in a running TensorBoard now, not at the next flush

    def run(self, pl_module: pl.LightningModule) -> dict[str, tuple[torch.Tensor, float]]:
        """Task → (grid (3, H', W') float in [0, 1] on the CPU, PSNR in dB) for the module's current weights.

        The module's own train/eval modes (every submodule's) are put back afterwards."""
        if self.prompts is None:
            raise RuntimeError("PromptGallery.run before setup: the prompts are read in setup(stage='fit')")
        device = pl_module.device
        if self.vqgan is None:
            self.vqgan = load_vqgan(self.tokenizer_path, map_location=device)
        modes = [(module, module.training) for module in pl_module.modules()]
        try:
            with torch.inference_mode():
                engine = GenerationEngine(pl_module.model)  # puts the model in eval mode
                return {task: self._run_task(engine, task, prompts) for task, prompts in self.prompts.items()}
        finally:
            for module, training in modes:
                module.training = training

    def _run_task(
        self, engine: GenerationEngine, task: str, prompts: list[GalleryPrompt]
    ) -> tuple[torch.Tensor, float]:
        """All prompts of one task as one batch → (grid, PSNR)."""
        assert self.vqgan is not None
        if task not in self._pictures:
            sizes = [len(p.context) for p in prompts]
            codes = torch.cat([torch.cat([p.context, p.truth[None]]) for p in prompts])  # (Σ (n_i + 1), n)
            images = decode_codes(self.vqgan, codes).cpu().split([n + 1 for n in sizes])
            self._pictures[task] = ([im[:-1] for im in images], torch.stack([im[-1] for im in images]))
        contexts, truth = self._pictures[task]
        generator = torch.Generator(device=engine.device).manual_seed(self.seed + self._last_step)
        sampling = restrict_to_codebook(self.sampling, self.vqgan)
        new = continue_image_codes(engine, [p.context for p in prompts], 1, sampling, generator=generator)
        generated = decode_codes(self.vqgan, new.reshape(len(prompts), -1)).cpu()  # (B, 3, H, W)
        return gallery_grid(contexts, generated, truth, self.padding), set_psnr(generated, truth)

    @property
    def tasks(self) -> list[str]:
        """The gallery's tasks (after setup), in logging order."""
        return list(self.prompts or {})


__all__ = ["GalleryPrompt", "PromptGallery", "gallery_grid", "load_prompts", "source_path"]

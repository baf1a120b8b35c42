"""Perplexity of target images given context images, as the original's `eval_perplexity.py` and
`eval_video_perplexity.py` measure it (the original's evaluation/vqlm_demo/eval_perplexity.py).

An example is context images then target images. Both are encoded by the VQGAN, concatenated
[input | target] with no separator, and run through the model in one forward pass; every target token
is scored on everything before it (the first target token is predicted from the last input token).
Per example: `loss` = mean NLL (nats) of its target tokens, `perplexity` = exp(loss). Over a run:
- `mean_perplexity`: the mean over examples of per-example perplexity, the number the original prints;
- `token_loss`, `token_perplexity`: the NLL averaged over all target tokens of all examples, and its exp.

Image examples come from a jsonl file, one line per example: {"input": [paths], "target": [paths]}
(key names configurable; relative paths are under `base_dir`, by default the jsonl's folder).
Video examples are clips of `n_context_frames` + `n_target_frames` frames `stride` apart from a random
start, one clip per video file or frame folder.

Inputs that cannot be used (a malformed line, an unreadable image or video) stop the run with an error
naming the file, the line and the field, or with `skip_bad=True` are skipped, counted and listed in the
summary. Videos too short for one clip are always skipped and counted. Results: `<stem>.csv` (one row
per example) and `<stem>.json` (the summary), both written atomically.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from lvm.core.atomic_files import write_csv_atomic, write_json_atomic
from lvm.eval.examples import ImageExample
from lvm.eval.heldout import model_nll
from lvm.eval.prompt_lines import load_prompt_images, read_prompt_lines
from lvm.eval.video_clips import find_videos, load_video_clips
from lvm.media.skips import SkipCounter
from lvm.model.llama import LLaMA
from lvm.tokenizer.codec import encode_images
from lvm.tokenizer.vqgan import VQGANModel

log = logging.getLogger(__name__)


# --- scoring ---------------------------------------------------------------------------------------


@dataclass
class CodedExample:
    """One example as codes: the context images' codes then the target images' codes, each 1-D int64
    (images concatenated in order, `tokens_per_image` codes each)."""

    id: str
    where: str  # names the example in errors: "<file>:<line>" or a video's path
    input_codes: np.ndarray
    target_codes: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class ExampleScore:
    """Target-token loss of one example: `loss` is the mean NLL (nats) over its `n_target_tokens`."""

    id: str
    n_input_tokens: int
    n_target_tokens: int
    loss: float
    meta: dict = field(default_factory=dict)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def row(self) -> dict:
        return {
            "id": self.id,
            **self.meta,
            "n_input_tokens": self.n_input_tokens,
            "n_target_tokens": self.n_target_tokens,
            "loss": self.loss,
            "perplexity": self.perplexity,
        }


def check_fits(model: LLaMA, examples: Sequence[CodedExample]) -> None:
    """Every example has context and target tokens, fits in the model's window and holds only ids
    the model knows; otherwise a ValueError naming the example."""
    max_len, vocab = model.config.max_seq_len, model.config.vocab_size
    for example in examples:
        n_in, n_target = len(example.input_codes), len(example.target_codes)
        if n_in == 0 or n_target == 0:
            raise ValueError(
                f"{example.where}: {n_in} context and {n_target} target tokens; both must be non-empty "
                "(the first target token is predicted from the last context token)"
            )
        if n_in + n_target > max_len:
            raise ValueError(
                f"{example.where}: {n_in} context + {n_target} target tokens = {n_in + n_target} "
                f"exceed the model's max_seq_len {max_len}; use fewer context images"
            )
        top = max(int(example.input_codes.max()), int(example.target_codes.max()))
        if top >= vocab:
            raise ValueError(
                f"{example.where}: code {top} ≥ the model's vocab_size {vocab}; is the tokenizer "
                "the one the model was trained on?"
            )


def target_nll(
    model: LLaMA, examples: Sequence[CodedExample], batch_size: int = 8, progress: bool = False
) -> list[np.ndarray]:
    """NLL (n_target_tokens,) of each example's target tokens, each predicted from every token before
    it. Examples of equal total length share a forward pass (`batch_size` at a time)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    check_fits(model, examples)
    by_length: dict[int, list[int]] = {}
    for i, example in enumerate(examples):
        by_length.setdefault(len(example.input_codes) + len(example.target_codes), []).append(i)
    batches = [
        indices[start : start + batch_size]
        for indices in by_length.values()
        for start in range(0, len(indices), batch_size)
    ]
    out: list[np.ndarray | None] = [None] * len(examples)
    for batch in track(batches, description="scoring", disable=not progress):
        sentences = [np.concatenate([examples[i].input_codes, examples[i].target_codes]) for i in batch]
        rows = model_nll(model, sentences, batch_size=len(batch))  # targets 1..T−1 of each sentence
        for i, row in zip(batch, rows):
            out[i] = row[-len(examples[i].target_codes) :]
    return out  # type: ignore[return-value]


def score_examples(
    model: LLaMA, examples: Sequence[CodedExample], batch_size: int = 8, progress: bool = False
) -> list[ExampleScore]:
    """Per-example target loss, in the order of `examples`."""
    rows = target_nll(model, examples, batch_size=batch_size, progress=progress)
    return [
        ExampleScore(
            id=example.id,
            n_input_tokens=len(example.input_codes),
            n_target_tokens=len(example.target_codes),
            loss=float(np.mean(row, dtype=np.float64)),
            meta=example.meta,
        )
        for example, row in zip(examples, rows)
    ]


def summarize(scores: Sequence[ExampleScore]) -> dict:
    """The run's numbers: mean over examples of perplexity (the original's) and of loss, and the
    token-weighted loss and its perplexity."""
    if not scores:
        raise ValueError("no examples were scored")
    n_tokens = sum(s.n_target_tokens for s in scores)
    token_loss = sum(s.loss * s.n_target_tokens for s in scores) / n_tokens
    return {
        "n_examples": len(scores),
        "n_target_tokens": n_tokens,
        "mean_perplexity": float(np.mean([s.perplexity for s in scores])),
        "mean_loss": float(np.mean([s.loss for s in scores])),
        "token_loss": token_loss,
        "token_perplexity": math.exp(token_loss),
    }


# --- encoding --------------------------------------------------------------------------------------


def encode_examples(
    vqgan: VQGANModel, examples: Iterable[ImageExample], images_per_batch: int = 64
) -> Iterator[CodedExample]:
    """Encode the images of consecutive examples together, at least `images_per_batch` per VQGAN call
    (whole examples at a time), and yield each example's codes in order."""
    pending: list[ImageExample] = []
    n_pending = 0

    def flush() -> Iterator[CodedExample]:
        images = torch.cat([torch.cat([e.inputs, e.targets]) for e in pending])
        codes = encode_images(vqgan, images, batch_size=images_per_batch).cpu().numpy()
        at = 0
        for e in pending:
            n_in, n_target = len(e.inputs), len(e.targets)
            yield CodedExample(
                id=e.id,
                where=e.where,
                input_codes=codes[at : at + n_in].reshape(-1),
                target_codes=codes[at + n_in : at + n_in + n_target].reshape(-1),
                meta=e.meta,
            )
            at += n_in + n_target

    for example in examples:
        pending.append(example)
        n_pending += len(example.inputs) + len(example.targets)
        if n_pending >= images_per_batch:
            yield from flush()
            pending, n_pending = [], 0
    if pending:
        yield from flush()


# --- results -----------------------------------------------------------------------------------------


def skip_summary(skips: SkipCounter) -> dict:
    return {
        "n_seen": skips.files_seen,
        "n_skipped": skips.n_skipped,
        "skipped": [{"where": where, "reason": reason} for where, reason in skips.skipped],
    }


def write_results(
    out_dir: str | os.PathLike, stem: str, scores: Sequence[ExampleScore], summary: dict
) -> tuple[Path, Path]:
    """`<out_dir>/<stem>.csv` (one row per example) and `<out_dir>/<stem>.json` (the summary)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    write_csv_atomic(csv_path, [s.row() for s in scores])
    write_json_atomic(json_path, summary)
    return csv_path, json_path


def print_report(
    title: str, scores: Sequence[ExampleScore], summary: dict, max_rows: int = 20, console: Console | None = None
) -> None:
    """The first `max_rows` examples and the run's numbers as rich tables."""
    console = console or Console()
    table = Table(title=title)
    for column in ("id", "context tokens", "target tokens", "loss", "perplexity"):
        table.add_column(column, justify="left" if column == "id" else "right")
    for s in scores[:max_rows]:
        table.add_row(s.id, str(s.n_input_tokens), str(s.n_target_tokens), f"{s.loss:.4f}", f"{s.perplexity:.3f}")
    if len(scores) > max_rows:
        table.add_row(f"… {len(scores) - max_rows} more in the CSV", "", "", "", "")
    console.print(table)
    totals = Table(title="summary")
    totals.add_column("measure")
    totals.add_column("value", justify="right")
    for key in (
        "n_examples",
        "n_target_tokens",
        "mean_perplexity",
        "mean_loss",
        "token_loss",
        "token_perplexity",
        "n_skipped",
    ):
        value = summary.get(key)
        totals.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(totals)


def _finish(
    model: LLaMA,
    examples: list[CodedExample],
    skips: SkipCounter,
    stem: str,
    title: str,
    out_dir: str | os.PathLike,
    settings: dict,
    batch_size: int,
    progress: bool,
) -> dict:
    if not examples:
        raise ValueError(f"{title}: no example left to score ({skips.summary()})")
    scores = score_examples(model, examples, batch_size=batch_size, progress=progress)
    summary = {"task": stem, **settings, **summarize(scores), **skip_summary(skips)}
    csv_path, json_path = write_results(out_dir, stem, scores, summary)
    summary["csv"], summary["json"] = str(csv_path), str(json_path)
    print_report(title, scores, summary)
    log.info(
        "%s: %d examples, mean perplexity %.4f, token perplexity %.4f (loss %.4f); %s; results in %s and %s",
        title,
        summary["n_examples"],
        summary["mean_perplexity"],
        summary["token_perplexity"],
        summary["token_loss"],
        skips.summary(),
        csv_path,
        json_path,
    )
    return summary


def _check_vocab(model: LLaMA, vqgan: VQGANModel) -> None:
    if vqgan.config.num_embeddings > model.config.vocab_size:
        raise ValueError(
            f"the VQGAN has {vqgan.config.num_embeddings} codes but the model's vocab_size is "
            f"{model.config.vocab_size}; they were not trained together"
        )


def evaluate_perplexity(
    model: LLaMA,
    vqgan: VQGANModel,
    prompts: str | os.PathLike,
    out_dir: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    input_key: str = "input",
    target_key: str = "target",
    batch_size: int = 8,
    encode_batch_size: int = 64,
    skip_bad: bool = False,
    progress: bool = True,
    about: dict | None = None,
) -> dict:
    """Score every line of the jsonl `prompts`; writes `perplexity.{csv,json}` to `out_dir` and returns
    the summary (`about`, e.g. the model's path, is copied into it)."""
    _check_vocab(model, vqgan)
    skips = SkipCounter()
    lines = read_prompt_lines(prompts, base_dir, input_key, target_key, skips if skip_bad else None)
    if not skip_bad:
        skips.saw(len(lines))
    images = load_prompt_images(
        lines, prompts, vqgan.config.resolution, input_key, target_key, skips if skip_bad else None
    )
    examples = list(
        track(
            encode_examples(vqgan, images, encode_batch_size),
            total=len(lines),
            description="encoding",
            disable=not progress,
        )
    )
    settings = {**(about or {}), "prompts": str(prompts), "base_dir": str(base_dir or Path(prompts).parent)}
    return _finish(model, examples, skips, "perplexity", "perplexity", out_dir, settings, batch_size, progress)


def evaluate_video_perplexity(
    model: LLaMA,
    vqgan: VQGANModel,
    videos: str | os.PathLike | Sequence[str],
    out_dir: str | os.PathLike,
    n_context_frames: int = 15,
    n_target_frames: int = 1,
    stride: int = 8,
    seed: int = 0,
    center_crop: float | None = None,
    batch_size: int = 8,
    encode_batch_size: int = 64,
    skip_bad: bool = False,
    progress: bool = True,
    about: dict | None = None,
) -> dict:
    """Score one clip per video (file or frame folder) of `videos`; writes `video_perplexity.{csv,json}`
    to `out_dir` and returns the summary (`about`, e.g. the model's path, is copied into it)."""
    _check_vocab(model, vqgan)
    sources = find_videos(videos)
    if not sources:
        raise ValueError(f"videos={videos!r}: no video files or frame folders found")
    skips = SkipCounter()
    clips = load_video_clips(
        sources, vqgan.config.resolution, n_context_frames, n_target_frames, stride, seed, center_crop, skips, skip_bad
    )
    examples = list(
        track(
            encode_examples(vqgan, clips, encode_batch_size),
            total=len(sources),
            description="encoding",
            disable=not progress,
        )
    )
    named = str(videos) if isinstance(videos, (str, os.PathLike)) else [str(v) for v in videos]
    settings = {
        **(about or {}),
        "videos": named,
        "n_context_frames": n_context_frames,
        "n_target_frames": n_target_frames,
        "stride": stride,
        "seed": seed,
        "center_crop": center_crop,
    }
    return _finish(
        model, examples, skips, "video_perplexity", "video perplexity", out_dir, settings, batch_size, progress
    )

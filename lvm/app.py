"""`python -m lvm.app`: a Gradio page for visual prompting (the original's evaluation/vqlm_demo/inference.py), served
on 127.0.0.1 unless told
otherwise (conf/app.yaml).

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

import itertools
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import gradio as gr
import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from lvm.core.devices import parse_dtype
from lvm.core.errors import report_user_errors
from lvm.generation.prompting import analogy_prompting, context_frame_indices, sequential_prompting
from lvm.generation.sampler import SamplingConfig
from lvm.interop.pretrained import load_model
from lvm.media.files import natural_sort_key
from lvm.media.images import pil_to_tensor, tensor_to_uint8, uint8_to_tensor
from lvm.media.skips import BadInputError
from lvm.media.video import read_video_frames
from lvm.model.llama import LLaMA
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.grid import image_grid
from lvm.tokenizer.vqgan import VQGANModel

Gallery = list[tuple[np.ndarray, str]]  # (H, W, 3) uint8 pictures with captions


class UploadError(ValueError):
    """A request the page refuses (a file over a limit, not an image, a missing field); shown to the user."""


@dataclass(frozen=True)
class UploadLimits:
    """What one uploaded file may be: at most `max_upload_mb` MB (MiB, as Gradio counts them) on disk and
    `max_pixels` pixels (per frame, for videos)."""

    max_upload_mb: float = 20.0
    max_pixels: int = 4096 * 4096

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024**2)


@dataclass(frozen=True)
class PageOptions:
    """The page's controls: their ranges and starting values."""

    max_examples: int = 3  # (x, y) upload rows in the analogy tab
    max_candidates: int = 8
    max_new_frames: int = 8
    n_candidates: int = 2
    temperature: float = 1.0  # the original's sampling: temperature 1, top-p 1, no top-k
    top_k: int = 0  # 0 = no top-k
    top_p: float = 1.0
    seed: int = 0
    n_new_frames: int = 1
    n_context_frames: int = 12  # the original's video evaluation keeps 12 context frames
    stride: int = 1  # every stride-th frame, counted back from the last one
    examples_per_tab: int = 8  # a demo run's held-out prompts offered as examples, at most, per tab


def _name(path: str | os.PathLike) -> str:
    return Path(path).name


def check_upload_size(path: str | os.PathLike, limits: UploadLimits) -> None:
    """UploadError naming the file when it is larger than `limits.max_upload_mb`."""
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise UploadError(
            f"{_name(path)}: {size / 1024**2:.3g} MB is over the upload limit of {limits.max_upload_mb:g} MB"
        )


def check_pixels(path: str | os.PathLike, width: int, height: int, limits: UploadLimits) -> None:
    """UploadError naming the file when width × height is over `limits.max_pixels`."""
    if width * height > limits.max_pixels:
        raise UploadError(
            f"{_name(path)}: {width}×{height} = {width * height:,} pixels is over the limit of "
            f"{limits.max_pixels:,} pixels"
        )


def read_upload_image(path: str | os.PathLike, size: int, limits: UploadLimits) -> torch.Tensor:
    """An uploaded image → (3, size, size) float32 in [0, 1], prepared as the original prepares images
    (lvm.media.images). Size and pixel count are checked before any pixel is decoded."""
    check_upload_size(path, limits)
    try:
        with Image.open(path) as image:  # reads the header only
            check_pixels(path, image.width, image.height, limits)
            image.load()
            return pil_to_tensor(image, size=size)
    except UploadError:
        raise
    except Image.DecompressionBombError as err:  # PIL's own cap, met before ours when the header is huge
        raise UploadError(f"{_name(path)}: over the limit of {limits.max_pixels:,} pixels ({err})") from err
    except UnidentifiedImageError as err:
        raise UploadError(
            f"{_name(path)}: not an image (PIL cannot identify it); upload a PNG, JPEG, WebP, BMP or TIFF file"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        raise UploadError(f"{_name(path)}: cannot read this image ({err})") from err


def read_upload_video(path: str | os.PathLike, size: int, limits: UploadLimits) -> list[np.ndarray]:
    """An uploaded video → its frames as (size, size, 3) uint8, read as the data pipelines read videos.
    Size and frame dimensions are checked before any frame is decoded."""
    check_upload_size(path, limits)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UploadError(f"{_name(path)}: no video stream in this file")
            codec = container.streams.video[0].codec_context
            check_pixels(path, codec.width, codec.height, limits)
    except UploadError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise UploadError(f"{_name(path)}: not a video PyAV can open ({err})") from err
    try:
        return read_video_frames(path, size)
    except BadInputError as err:
        raise UploadError(f"{_name(path)}: {err.reason}") from err


class DemoRunError(ValueError):
    """A demo run the page cannot be served from: none finished, a missing file, a malformed prompts.json."""


@dataclass(frozen=True)
class AnalogyPrompt:
    """One held-out analogy of a demo run: its task, (x, y) example file pairs and the query x file."""

    task: str
    pairs: tuple[tuple[Path, Path], ...]
    query: Path


@dataclass(frozen=True)
class DemoPrompts:
    """A demo run's held-out prompts (its prompts.json): analogies, and next-frame prompts as frame files
    in order."""

    analogy: tuple[AnalogyPrompt, ...] = ()
    next_frame: tuple[tuple[Path, ...], ...] = ()


@dataclass(frozen=True)
class PageSources:
    """What the page serves: the LVM and the VQGAN, and the demo run (if any) whose prompts are its examples."""

    model_path: Path
    tokenizer_path: Path
    run_dir: Path | None = None
    prompts: DemoPrompts = DemoPrompts()


DEMO_MODEL = Path("lvm/checkpoints/last.ckpt")  # the files of a demo run folder (lvm.demo writes them)
DEMO_TOKENIZER = Path("tokenizer")
DEMO_PROMPTS = Path("prompts.json")
DEMO_SUMMARY = Path("summary.json")  # written last: marks a finished run


def _expect(source: Path, value: Any, kind: type, where: str) -> Any:
    """`value` if it is a `kind` (a non-empty one for str); DemoRunError naming `source` and the field otherwise."""
    if not isinstance(value, kind) or (kind is str and not value):
        raise DemoRunError(
            f"{source}: field '{where}' should be a {'non-empty ' * (kind is str)}{kind.__name__}"
            f", got {json.dumps(value)[:60]}"
        )
    return value


def _field(source: Path, record: dict, key: str, kind: type, where: str) -> Any:
    """`record[key]`, checked to be there and to be a `kind` (`where` names it in errors)."""
    if key not in record:
        raise DemoRunError(f"{source}: field '{where}' is missing")
    return _expect(source, record[key], kind, where)


def _prompt_file(source: Path, value: Any, where: str) -> Path:
    """A prompt's image path (relative to the run folder, which holds `source`), checked to exist."""
    path = source.parent / _expect(source, value, str, where)
    if not path.is_file():
        raise DemoRunError(f"{source}: field '{where}' names {path}, which does not exist")
    return path


def read_demo_prompts(run_dir: str | os.PathLike) -> DemoPrompts:
    """The held-out prompts of the demo run at `run_dir` (its prompts.json, version 1), every file checked
    to exist; DemoRunError naming the file and the field when it is missing or malformed."""
    source = Path(run_dir) / DEMO_PROMPTS
    if not source.is_file():
        raise DemoRunError(
            f"{source}: not found (a demo run folder holds prompts.json, written by `python -m lvm.demo`)"
        )
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as err:
        raise DemoRunError(f"{source}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DemoRunError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("version") != 1:
        raise DemoRunError(f"{source}: field 'version' should be 1, got {json.dumps(data.get('version'))}")
    analogies = []
    for i, record in enumerate(_field(source, data, "analogy", list, "analogy")):
        where = f"analogy[{i}]"
        _expect(source, record, dict, where)
        pairs = []
        for j, pair in enumerate(_field(source, record, "examples", list, f"{where}.examples")):
            if not isinstance(pair, list) or len(pair) != 2:
                raise DemoRunError(
                    f"{source}: field '{where}.examples[{j}]' should be an [x, y] pair of paths, "
                    f"got {json.dumps(pair)[:60]}"
                )
            pairs.append(tuple(_prompt_file(source, f, f"{where}.examples[{j}][{k}]") for k, f in enumerate(pair)))
        if not pairs:
            raise DemoRunError(f"{source}: field '{where}.examples' is empty (an analogy needs an (x, y) pair)")
        task = _field(source, record, "task", str, f"{where}.task")
        query = _prompt_file(source, _field(source, record, "query", str, f"{where}.query"), f"{where}.query")
        analogies.append(AnalogyPrompt(task, tuple(pairs), query))
    next_frame = []
    for i, record in enumerate(_field(source, data, "next_frame", list, "next_frame")):
        where = f"next_frame[{i}]"
        frames = _field(source, _expect(source, record, dict, where), "frames", list, f"{where}.frames")
        if not frames:
            raise DemoRunError(f"{source}: field '{where}.frames' is empty")
        next_frame.append(tuple(_prompt_file(source, f, f"{where}.frames[{j}]") for j, f in enumerate(frames)))
    return DemoPrompts(tuple(analogies), tuple(next_frame))


def latest_demo_run(runs_dir: str | os.PathLike) -> Path:
    """The demo run under `runs_dir` whose summary.json (written when it finished) is the newest."""
    finished = list(Path(runs_dir).glob(f"*/{DEMO_SUMMARY}"))
    if not finished:
        raise DemoRunError(
            f"no finished demo run in {runs_dir} (none has {DEMO_SUMMARY}): run `python -m lvm.demo` "
            "first or pass model_path=... tokenizer_path=..."
        )
    return max(finished, key=lambda summary: (summary.stat().st_mtime, summary.parent.name)).parent


def resolve_page_sources(
    demo_run: str | os.PathLike | None,
    runs_dir: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    tokenizer_path: str | os.PathLike | None = None,
) -> PageSources:
    """The model, tokenizer and examples the page serves. `demo_run` is "latest" (the newest finished run
    under `runs_dir`), a run folder, or None (no demo run: both paths needed). The run fills whichever of
    `model_path` / `tokenizer_path` is None (<run>/lvm/checkpoints/last.ckpt, <run>/tokenizer) and gives
    its prompts; given paths win. With both paths given, "latest" is not looked for: they name another
    model, which a run must be named explicitly to pair with."""
    given = model_path is not None and tokenizer_path is not None
    if demo_run is None or (demo_run == "latest" and given):
        if not given:
            raise DemoRunError("demo_run=null: pass model_path=... tokenizer_path=... (or demo_run=<run folder>)")
        return PageSources(Path(model_path), Path(tokenizer_path))
    run_dir = latest_demo_run(runs_dir) if demo_run == "latest" else Path(demo_run)
    if not run_dir.is_dir():
        raise DemoRunError(
            f"demo_run={demo_run}: no such folder (expected a run of `python -m lvm.demo`, "
            f"e.g. {Path(runs_dir) / '<time>'})"
        )
    filled = []
    for path, default in ((model_path, DEMO_MODEL), (tokenizer_path, DEMO_TOKENIZER)):
        if path is None and not (run_dir / default).exists():
            raise DemoRunError(
                f"{run_dir / default}: not found in demo run {run_dir} (unfinished?); pass "
                f"{'model_path' if default == DEMO_MODEL else 'tokenizer_path'}=... or another run"
            )
        filled.append(Path(path) if path is not None else run_dir / default)
    return PageSources(*filled, run_dir=run_dir, prompts=read_demo_prompts(run_dir))


class VisualPrompter:
    """A loaded LVM and its VQGAN, and the two prompting modes as generators of growing galleries."""

    def __init__(self, model: LLaMA, vqgan: VQGANModel, limits: UploadLimits = UploadLimits()):
        codes = vqgan.config.num_embeddings
        if model.config.vocab_size < codes:
            raise ValueError(
                f"the model's vocab_size {model.config.vocab_size} is smaller than the VQGAN's "
                f"codebook of {codes} codes; are model_path and tokenizer_path a pair?"
            )
        self.model, self.vqgan, self.limits = model, vqgan, limits
        self.size = vqgan.config.resolution
        self.capacity = model.config.max_seq_len // vqgan.config.tokens_per_image  # whole images in context
        if self.capacity < 2:
            raise ValueError(
                f"the model's max_seq_len {model.config.max_seq_len} holds {self.capacity} image(s) "
                f"of {vqgan.config.tokens_per_image} codes; prompting needs at least 2"
            )
        self.device = next(model.parameters()).device

    def _image(self, path: str) -> torch.Tensor:
        return read_upload_image(path, self.size, self.limits)

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def analogy(
        self,
        pairs: Sequence[tuple[str | None, str | None]],
        query: str | None,
        sampling: SamplingConfig,
        n_candidates: int,
        seed: int,
    ) -> Iterator[tuple[Gallery, Gallery]]:
        """Example (x, y) file pairs (rows with neither file are skipped) + a query file → yields
        (the prompt as the model sees it, the candidates so far) after the prompt is read and after each
        candidate."""
        examples = []
        for row, (x, y) in enumerate(pairs, start=1):
            if x is None and y is None:
                continue
            if x is None or y is None:
                raise UploadError(f"example {row}: upload both x and y (only {'x' if y is None else 'y'} given)")
            examples.append((row, self._image(x), self._image(y)))
        if not examples:
            raise UploadError("upload at least one (x, y) example pair")
        if query is None:
            raise UploadError("upload a query image x")
        query_image = self._image(query)
        fit = (self.capacity - 2) // 2  # x₁ y₁ … x_k y_k x_q and the answer, all in the model's context
        if fit < 1:
            raise UploadError(
                f"the model's context holds {self.capacity} images; an analogy needs 4 (x, y, query, answer)"
            )
        if len(examples) > fit:
            gr.Warning(
                f"The model's context holds {self.capacity} images: using the last {fit} of "
                f"{len(examples)} example pairs."
            )
            examples = examples[-fit:]
        prompt = [
            item
            for row, x, y in examples
            for item in ((tensor_to_uint8(x), f"x{row}"), (tensor_to_uint8(y), f"y{row}"))
        ]
        prompt.append((tensor_to_uint8(query_image), "query"))
        yield prompt, []
        candidates: Gallery = []
        pairs = [(x, y) for _, x, y in examples]
        for i in range(n_candidates):
            answer = analogy_prompting(
                self.model, self.vqgan, pairs, query_image, sampling, 1, self._generator(seed + i)
            )[0]
            candidates.append((tensor_to_uint8(answer), f"candidate {i + 1} · seed {seed + i}"))
            yield prompt, list(candidates)

    def continue_frames(
        self,
        video: str | None,
        frames: Sequence[str] | None,
        n_new_frames: int,
        n_context: int,
        stride: int,
        sampling: SamplingConfig,
        n_candidates: int,
        seed: int,
    ) -> Iterator[tuple[Gallery, Gallery]]:
        """A video file, or frame files (taken in natural name order) → yields (the context frames as the
        model sees them, one strip of `n_new_frames` frames per candidate so far)."""
        frames = sorted(frames or [], key=lambda p: natural_sort_key(_name(p)))
        if video is not None and frames:
            raise UploadError("upload a video file or frames, not both")
        if video is None and not frames:
            raise UploadError("upload a video file or at least one frame")
        if n_context > self.capacity - 1:
            gr.Warning(
                f"The model's context holds {self.capacity} images: using {self.capacity - 1} context "
                f"frames, not {n_context}."
            )
            n_context = self.capacity - 1
        if video is not None:
            decoded = read_upload_video(video, self.size, self.limits)
            chosen = context_frame_indices(len(decoded), n_context, stride)
            context = torch.stack([uint8_to_tensor(decoded[i]) for i in chosen])
            labels = [f"frame {i + 1} of {len(decoded)}" for i in chosen]
        else:
            chosen = context_frame_indices(len(frames), n_context, stride)
            context = torch.stack([self._image(frames[i]) for i in chosen])
            labels = [_name(frames[i]) for i in chosen]
        prompt = [(picture, label) for picture, label in zip(tensor_to_uint8(context), labels)]
        yield prompt, []
        candidates: Gallery = []
        for i in range(n_candidates):
            new = sequential_prompting(
                self.model, self.vqgan, context, n_new_frames, sampling, 1, self._generator(seed + i)
            )[0]
            strip = image_grid(new, columns=n_new_frames)
            candidates.append((strip, f"candidate {i + 1} · seed {seed + i} · {n_new_frames} new frame(s)"))
            yield prompt, list(candidates)


def _sampling(temperature: float, top_k: float | None, top_p: float) -> SamplingConfig:
    try:
        return SamplingConfig(temperature=float(temperature), top_k=int(top_k) if top_k else None, top_p=float(top_p))
    except ValueError as err:
        raise UploadError(str(err)) from err


def _shown(make_stream: Callable[[], Iterator]) -> Iterator:
    """Pass the galleries through; a refused request becomes a gr.Error, which the page shows as is."""
    try:
        yield from make_stream()
    except UploadError as err:
        raise gr.Error(str(err), print_exception=False) from err


def image_field(label: str) -> gr.Image:
    """An image input that shows its upload and hands the handlers the file untouched (type="filepath", no
    mode conversion), so they read the user's pixels and check them with read_upload_image. Gradio opens the
    file first; one that PIL refuses is handed on all the same, for read_upload_image to refuse with a
    message naming the file (Gradio's would say only "Error"). Done on the instance: Gradio writes a .pyi
    copy of any module that defines a component subclass."""
    field = gr.Image(
        type="filepath",
        image_mode=None,
        format="png",
        sources=["upload", "clipboard"],
        label=label,
        height=160,
        min_width=100,
    )
    gradio_preprocess = field.preprocess

    def preprocess(payload: Any) -> str | None:
        try:
            return gradio_preprocess(payload)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            if payload is None or payload.path is None:
                raise
            return str(payload.path)

    field.preprocess = preprocess
    return field


def examples_by_task(prompts: Sequence[AnalogyPrompt], limit: int) -> dict[str, list[AnalogyPrompt]]:
    """At most `limit` prompts, taken in turn from each task (tasks in order of first appearance), by task."""
    by_task: dict[str, list[AnalogyPrompt]] = {}
    for prompt in prompts:
        by_task.setdefault(prompt.task, []).append(prompt)
    chosen = [p for turn in itertools.zip_longest(*by_task.values()) for p in turn if p is not None][:limit]
    return {task: picked for task in by_task if (picked := [p for p in chosen if p.task == task])}


def analogy_example_row(prompt: AnalogyPrompt, n_pairs: int) -> list[str | None]:
    """The analogy tab's inputs for `prompt`: x₁ y₁ … (its first `n_pairs` pairs, empty rows after) and x_q."""
    files: list[str | None] = [str(f) for pair in prompt.pairs[:n_pairs] for f in pair]
    return files + [None] * (2 * n_pairs - len(files)) + [str(prompt.query)]


def build_app(
    prompter: VisualPrompter, options: PageOptions = PageOptions(), prompts: DemoPrompts = DemoPrompts()
) -> gr.Blocks:
    """The page: an "Analogy" tab and a "Video / sequence" tab sharing the sampling controls, each with
    `prompts` (a demo run's held-out prompts) as clickable examples that fill its inputs. Both Generate
    events share one queue slot (`concurrency_id="lvm"`): the model's KV cache serves one request at a
    time."""
    limits = prompter.limits
    image_types = ["image"]
    with gr.Blocks(title="LVM visual prompting", analytics_enabled=False) as app:
        gr.Markdown(
            "# LVM visual prompting\n"
            f"Images are read at {prompter.size}×{prompter.size} px; the model's context holds {prompter.capacity} "
            f"images. Uploads: at most {limits.max_upload_mb:g} MB and {limits.max_pixels:,} pixels per file. "
            "Candidate *i* (from 0) is drawn with seed + *i*, so each can be drawn again alone."
        )
        with gr.Accordion("Sampling", open=True):
            with gr.Row():
                temperature = gr.Slider(
                    0.0, 2.0, value=options.temperature, step=0.05, label="temperature (0 = greedy)"
                )
                top_k = gr.Number(value=options.top_k, precision=0, minimum=0, label="top-k (0 = off)")
                top_p = gr.Slider(0.01, 1.0, value=options.top_p, step=0.01, label="top-p")
                n_candidates = gr.Slider(
                    1, options.max_candidates, value=options.n_candidates, step=1, label="candidates"
                )
                seed = gr.Number(value=options.seed, precision=0, minimum=0, label="seed")
        sampling_inputs = [temperature, top_k, top_p, n_candidates, seed]

        with gr.Tab("Analogy"):
            gr.Markdown(
                "Upload example pairs (x → y) and a query x, or pick an example below; the model writes the query's y."
            )
            pair_inputs = []
            with gr.Row(equal_height=True):
                for row in range(1, options.max_examples + 1):
                    pair_inputs += [image_field(f"x{row}"), image_field(f"y{row}")]
                query = image_field("query x")
            analogy_button = gr.Button("Generate", variant="primary")
            for task, chosen in examples_by_task(prompts.analogy, options.examples_per_tab).items():
                gr.Examples(
                    [analogy_example_row(p, options.max_examples) for p in chosen],
                    [*pair_inputs, query],
                    label=f"Examples: {task}",
                    cache_examples=False,
                    api_name="analogy_example_" + re.sub(r"\W+", "_", task),
                )
            analogy_prompt = gr.Gallery(label="prompt as the model sees it", format="png", columns=8, height=200)
            analogy_out = gr.Gallery(label="candidates", format="png", columns=4, height=240)

        with gr.Tab("Video / sequence"):
            gr.Markdown(
                "Upload a video file, or frames (taken in name order), or pick an example below; the model "
                "writes the next frames."
            )
            with gr.Row():
                video = gr.File(file_types=["video"], label="video file", scale=1)
                frames = gr.Gallery(
                    type="filepath",
                    file_types=image_types,
                    interactive=True,
                    format="png",
                    label="or frames",
                    columns=8,
                    height=200,
                    scale=3,
                )
            with gr.Row():
                n_new_frames = gr.Slider(
                    1, options.max_new_frames, value=options.n_new_frames, step=1, label="new frames"
                )
                n_context = gr.Slider(
                    1,
                    max(prompter.capacity - 1, 1),
                    step=1,
                    label="context frames",
                    value=min(options.n_context_frames, prompter.capacity - 1),
                )
                stride = gr.Slider(
                    1, 16, value=options.stride, step=1, label="stride (every k-th frame, from the last)"
                )
            video_button = gr.Button("Generate", variant="primary")
            if prompts.next_frame:
                gr.Examples(
                    [[[str(f) for f in frame_files]] for frame_files in prompts.next_frame[: options.examples_per_tab]],
                    [frames],
                    label="Examples: held-out videos (next frame)",
                    cache_examples=False,
                    api_name="video_example",
                )
            video_prompt = gr.Gallery(label="context as the model sees it", format="png", columns=8, height=200)
            video_out = gr.Gallery(
                label="candidates (one strip of new frames each)", format="png", columns=1, height=240
            )

        def analogy(*values):
            files, (query_file, t, k, p, n, s) = values[:-6], values[-6:]
            pairs = list(zip(files[0::2], files[1::2]))
            yield from _shown(lambda: prompter.analogy(pairs, query_file, _sampling(t, k, p), int(n), int(s or 0)))

        def continue_video(video_file, frame_items, new, context, step, t, k, p, n, s):
            frame_files = [path for path, _caption in frame_items or []]  # the gallery's (file, caption) pairs
            yield from _shown(
                lambda: prompter.continue_frames(
                    video_file, frame_files, int(new), int(context), int(step), _sampling(t, k, p), int(n), int(s or 0)
                )
            )

        analogy_button.click(
            analogy,
            [*pair_inputs, query, *sampling_inputs],
            [analogy_prompt, analogy_out],
            api_name="analogy",
            concurrency_id="lvm",
            concurrency_limit=1,
        )
        video_button.click(
            continue_video,
            [video, frames, n_new_frames, n_context, stride, *sampling_inputs],
            [video_prompt, video_out],
            api_name="continue_video",
            concurrency_id="lvm",
            concurrency_limit=1,
        )
    return app


def launch_app(
    app: gr.Blocks,
    limits: UploadLimits = UploadLimits(),
    server_name: str = "127.0.0.1",
    server_port: int | None = None,
    prevent_thread_lock: bool = False,
) -> gr.Blocks:
    """Serve the page on `server_name` (loopback by default; never a public share link). Gradio refuses
    uploads over the size limit itself (`max_file_size`), before they reach the handlers' own checks."""
    app.queue().launch(
        server_name=server_name,
        server_port=server_port,
        share=False,
        max_file_size=limits.max_bytes,
        prevent_thread_lock=prevent_thread_lock,
    )
    return app


def load_prompter(
    model_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    device: str = "cpu",
    dtype: str = "fp32",
    limits: UploadLimits = UploadLimits(),
) -> VisualPrompter:
    """The LVM at `model_path` (our .ckpt or a Hugging Face folder) in `dtype` and the VQGAN at
    `tokenizer_path` (fp32), both on `device`."""
    model = load_model(model_path, device=device, dtype=parse_dtype(dtype))
    vqgan = load_vqgan(tokenizer_path, map_location=device).eval()
    return VisualPrompter(model, vqgan, limits)


def serve(cfg: DictConfig, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Load the model and tokenizer that `cfg` names (or its demo run holds), build the page with the run's
    prompts as examples and serve it."""
    sources = resolve_page_sources(cfg.demo_run, cfg.demo_runs_dir, cfg.model_path, cfg.tokenizer_path)
    limits = UploadLimits(**cfg.limits)
    prompter = load_prompter(sources.model_path, sources.tokenizer_path, cfg.device, cfg.dtype, limits)
    app = build_app(prompter, PageOptions(**cfg.page), sources.prompts)
    return launch_app(app, limits, cfg.server_name, cfg.server_port, prevent_thread_lock)


@hydra.main(version_base="1.3", config_path="../conf", config_name="app")
@report_user_errors
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()

"""`python -m lvm.app model_path=... tokenizer_path=...`: a Gradio page for visual prompting (spec §7),
served on 127.0.0.1 unless told otherwise (conf/app.yaml).

Two tabs: "Analogy" (x₁ y₁ … x_k y_k x_q → candidate y_q's) and "Video / sequence" (a video file, or
frames in name order → the next frames). Candidates appear one by one as they are drawn; candidate i
(counting from 0) is drawn alone with seed + i, so any one of them can be drawn again by itself
(n_candidates=1, seed=seed + i).

Examples:
    python -m lvm.app model_path=logs/train/runs/<time>/checkpoints/last.ckpt tokenizer_path=ckpt/vqgan
    python -m lvm.app model_path=ckpt/lvm-7b-hf tokenizer_path=ckpt/vqgan device=cuda dtype=fp16
Uploads larger than `limits.max_upload_mb` or `limits.max_pixels`, and files that are not images (or
not videos, in the video field), are refused with a message naming the file and the limit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import gradio as gr
import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from data_pipelines.common import BadInputError, natural_sort_key, read_video_frames
from lvm.generation.prompting import analogy_prompting, context_frame_indices, sequential_prompting
from lvm.generation.sampler import SamplingConfig
from lvm.model.llama import LLaMA
from lvm.model.pretrained import load_model, parse_dtype
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.grid import image_grid
from lvm.tokenizer.preprocess import pil_to_tensor, tensor_to_uint8, uint8_to_tensor
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

    max_examples: int = 3         # (x, y) upload rows in the analogy tab
    max_candidates: int = 8
    max_new_frames: int = 8
    n_candidates: int = 2
    temperature: float = 1.0      # the original's sampling: temperature 1, top-p 1, no top-k
    top_k: int = 0                # 0 = no top-k
    top_p: float = 1.0
    seed: int = 0
    n_new_frames: int = 1
    n_context_frames: int = 12    # the original's video evaluation keeps 12 context frames
    stride: int = 1               # every stride-th frame, counted back from the last one


def _name(path: str | os.PathLike) -> str:
    return Path(path).name


def check_upload_size(path: str | os.PathLike, limits: UploadLimits) -> None:
    """UploadError naming the file when it is larger than `limits.max_upload_mb`."""
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise UploadError(f"{_name(path)}: {size / 1024**2:.3g} MB is over the upload limit of "
                          f"{limits.max_upload_mb:g} MB")


def check_pixels(path: str | os.PathLike, width: int, height: int, limits: UploadLimits) -> None:
    """UploadError naming the file when width × height is over `limits.max_pixels`."""
    if width * height > limits.max_pixels:
        raise UploadError(f"{_name(path)}: {width}×{height} = {width * height:,} pixels is over the limit of "
                          f"{limits.max_pixels:,} pixels")


def read_upload_image(path: str | os.PathLike, size: int, limits: UploadLimits) -> torch.Tensor:
    """An uploaded image → (3, size, size) float32 in [0, 1], prepared as the original prepares images
    (lvm.tokenizer.preprocess). Size and pixel count are checked before any pixel is decoded."""
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
        raise UploadError(f"{_name(path)}: not an image (PIL cannot identify it); upload a PNG, JPEG, WebP, "
                          "BMP or TIFF file") from err
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


class VisualPrompter:
    """A loaded LVM and its VQGAN, and the two prompting modes as generators of growing galleries."""

    def __init__(self, model: LLaMA, vqgan: VQGANModel, limits: UploadLimits = UploadLimits()):
        codes = vqgan.config.num_embeddings
        if model.config.vocab_size < codes:
            raise ValueError(f"the model's vocab_size {model.config.vocab_size} is smaller than the VQGAN's "
                             f"codebook of {codes} codes; are model_path and tokenizer_path a pair?")
        self.model, self.vqgan, self.limits = model, vqgan, limits
        self.size = vqgan.config.resolution
        self.capacity = model.config.max_seq_len // vqgan.config.tokens_per_image  # whole images in context
        if self.capacity < 2:
            raise ValueError(f"the model's max_seq_len {model.config.max_seq_len} holds {self.capacity} image(s) "
                             f"of {vqgan.config.tokens_per_image} codes; prompting needs at least 2")
        self.device = next(model.parameters()).device

    def _image(self, path: str) -> torch.Tensor:
        return read_upload_image(path, self.size, self.limits)

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def analogy(self, pairs: Sequence[tuple[str | None, str | None]], query: str | None, sampling: SamplingConfig,
                n_candidates: int, seed: int) -> Iterator[tuple[Gallery, Gallery]]:
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
            raise UploadError(f"the model's context holds {self.capacity} images; an analogy needs 4 "
                              "(x, y, query, answer)")
        if len(examples) > fit:
            gr.Warning(f"The model's context holds {self.capacity} images: using the last {fit} of "
                       f"{len(examples)} example pairs.")
            examples = examples[-fit:]
        prompt = [item for row, x, y in examples
                  for item in ((tensor_to_uint8(x), f"x{row}"), (tensor_to_uint8(y), f"y{row}"))]
        prompt.append((tensor_to_uint8(query_image), "query"))
        yield prompt, []
        candidates: Gallery = []
        pairs = [(x, y) for _, x, y in examples]
        for i in range(n_candidates):
            answer = analogy_prompting(self.model, self.vqgan, pairs, query_image, sampling, 1,
                                       self._generator(seed + i))[0]
            candidates.append((tensor_to_uint8(answer), f"candidate {i + 1} · seed {seed + i}"))
            yield prompt, list(candidates)

    def continue_frames(self, video: str | None, frames: Sequence[str] | None, n_new_frames: int, n_context: int,
                        stride: int, sampling: SamplingConfig, n_candidates: int,
                        seed: int) -> Iterator[tuple[Gallery, Gallery]]:
        """A video file, or frame files (taken in natural name order) → yields (the context frames as the
        model sees them, one strip of `n_new_frames` frames per candidate so far)."""
        frames = sorted(frames or [], key=lambda p: natural_sort_key(_name(p)))
        if video is not None and frames:
            raise UploadError("upload a video file or frames, not both")
        if video is None and not frames:
            raise UploadError("upload a video file or at least one frame")
        if n_context > self.capacity - 1:
            gr.Warning(f"The model's context holds {self.capacity} images: using {self.capacity - 1} context "
                       f"frames, not {n_context}.")
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
            new = sequential_prompting(self.model, self.vqgan, context, n_new_frames, sampling, 1,
                                       self._generator(seed + i))[0]
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


def build_app(prompter: VisualPrompter, options: PageOptions = PageOptions()) -> gr.Blocks:
    """The page: an "Analogy" tab and a "Video / sequence" tab sharing the sampling controls. Both events
    share one queue slot (`concurrency_id="lvm"`): the model's KV cache serves one request at a time."""
    limits = prompter.limits
    image_types = ["image"]
    with gr.Blocks(title="LVM visual prompting", analytics_enabled=False) as app:
        gr.Markdown(
            "# LVM visual prompting\n"
            f"Images are read at {prompter.size}×{prompter.size} px; the model's context holds {prompter.capacity} "
            f"images. Uploads: at most {limits.max_upload_mb:g} MB and {limits.max_pixels:,} pixels per file. "
            "Candidate *i* (from 0) is drawn with seed + *i*, so each can be drawn again alone.")
        with gr.Accordion("Sampling", open=True):
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=options.temperature, step=0.05,
                                        label="temperature (0 = greedy)")
                top_k = gr.Number(value=options.top_k, precision=0, minimum=0, label="top-k (0 = off)")
                top_p = gr.Slider(0.01, 1.0, value=options.top_p, step=0.01, label="top-p")
                n_candidates = gr.Slider(1, options.max_candidates, value=options.n_candidates, step=1,
                                         label="candidates")
                seed = gr.Number(value=options.seed, precision=0, minimum=0, label="seed")
        sampling_inputs = [temperature, top_k, top_p, n_candidates, seed]

        with gr.Tab("Analogy"):
            gr.Markdown("Upload example pairs (x → y) and a query x; the model writes the query's y.")
            pair_inputs = []
            for row in range(1, options.max_examples + 1):
                with gr.Row():
                    pair_inputs += [gr.File(file_types=image_types, label=f"x{row}"),
                                    gr.File(file_types=image_types, label=f"y{row}")]
            query = gr.File(file_types=image_types, label="query x")
            analogy_button = gr.Button("Generate", variant="primary")
            analogy_prompt = gr.Gallery(label="prompt as the model sees it", format="png", columns=8)
            analogy_out = gr.Gallery(label="candidates", format="png", columns=4)

        with gr.Tab("Video / sequence"):
            gr.Markdown("Upload a video file, or frames (taken in name order); the model writes the next frames.")
            with gr.Row():
                video = gr.File(file_types=["video"], label="video file")
                frames = gr.File(file_count="multiple", file_types=image_types, label="or frames")
            with gr.Row():
                n_new_frames = gr.Slider(1, options.max_new_frames, value=options.n_new_frames, step=1,
                                         label="new frames")
                n_context = gr.Slider(1, max(prompter.capacity - 1, 1), step=1, label="context frames",
                                      value=min(options.n_context_frames, prompter.capacity - 1))
                stride = gr.Slider(1, 16, value=options.stride, step=1,
                                   label="stride (every k-th frame, from the last)")
            video_button = gr.Button("Generate", variant="primary")
            video_prompt = gr.Gallery(label="context as the model sees it", format="png", columns=8)
            video_out = gr.Gallery(label="candidates (one strip of new frames each)", format="png", columns=1)

        def analogy(*values):
            files, (query_file, t, k, p, n, s) = values[:-6], values[-6:]
            pairs = list(zip(files[0::2], files[1::2]))
            yield from _shown(lambda: prompter.analogy(pairs, query_file, _sampling(t, k, p), int(n), int(s or 0)))

        def continue_video(video_file, frame_files, new, context, step, t, k, p, n, s):
            yield from _shown(lambda: prompter.continue_frames(video_file, frame_files, int(new), int(context),
                                                               int(step), _sampling(t, k, p), int(n), int(s or 0)))

        analogy_button.click(analogy, [*pair_inputs, query, *sampling_inputs], [analogy_prompt, analogy_out],
                             api_name="analogy", concurrency_id="lvm", concurrency_limit=1)
        video_button.click(continue_video, [video, frames, n_new_frames, n_context, stride, *sampling_inputs],
                           [video_prompt, video_out], api_name="continue_video", concurrency_id="lvm",
                           concurrency_limit=1)
    return app


def launch_app(app: gr.Blocks, limits: UploadLimits = UploadLimits(), server_name: str = "127.0.0.1",
               server_port: int | None = None, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Serve the page on `server_name` (loopback by default; never a public share link). Gradio refuses
    uploads over the size limit itself (`max_file_size`), before they reach the handlers' own checks."""
    app.queue().launch(server_name=server_name, server_port=server_port, share=False,
                       max_file_size=limits.max_bytes, prevent_thread_lock=prevent_thread_lock)
    return app


def load_prompter(model_path: str | os.PathLike, tokenizer_path: str | os.PathLike, device: str = "cpu",
                  dtype: str = "fp32", limits: UploadLimits = UploadLimits()) -> VisualPrompter:
    """The LVM at `model_path` (our .ckpt or a Hugging Face folder) in `dtype` and the VQGAN at
    `tokenizer_path` (fp32), both on `device`."""
    model = load_model(model_path, device=device, dtype=parse_dtype(dtype))
    vqgan = load_vqgan(tokenizer_path, map_location=device).eval()
    return VisualPrompter(model, vqgan, limits)


def serve(cfg: DictConfig, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Load the model and tokenizer named in `cfg`, build the page and serve it."""
    limits = UploadLimits(**cfg.limits)
    prompter = load_prompter(cfg.model_path, cfg.tokenizer_path, cfg.device, cfg.dtype, limits)
    app = build_app(prompter, PageOptions(**cfg.page))
    return launch_app(app, limits, cfg.server_name, cfg.server_port, prevent_thread_lock)


@hydra.main(version_base="1.3", config_path="../conf", config_name="app")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()

"""A loaded LVM and its VQGAN, with analogy and sequential prompting as generators of growing galleries."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import gradio as gr
import numpy as np
import torch

from lvm.core.devices import parse_dtype
from lvm.generation.prompting import analogy_prompting, context_frame_indices, sequential_prompting
from lvm.generation.sampler import SamplingConfig
from lvm.interop.pretrained import load_model
from lvm.media.files import natural_sort_key
from lvm.media.images import tensor_to_uint8, uint8_to_tensor
from lvm.model.llama import LLaMA
from lvm.page.uploads import UploadError, UploadLimits, _name, read_upload_image, read_upload_video
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.grid import image_grid
from lvm.tokenizer.vqgan import VQGANModel

Gallery = list[tuple[np.ndarray, str]]  # (H, W, 3) uint8 pictures with captions


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


def load_prompter(
    model_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    device: str = "cpu",
    dtype: str = "fp32",
    limits: UploadLimits = UploadLimits(),
    quantize: str | None = None,
) -> VisualPrompter:
    """The LVM at `model_path` (our .ckpt or a Hugging Face folder) in `dtype`, quantized as `quantize` says
    (None or "int8"), and the VQGAN at `tokenizer_path` (fp32), both on `device`."""
    model = load_model(model_path, device=device, dtype=parse_dtype(dtype), quantize=quantize)
    vqgan = load_vqgan(tokenizer_path, map_location=device).eval()
    return VisualPrompter(model, vqgan, limits)

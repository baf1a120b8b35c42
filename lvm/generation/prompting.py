"""Visual prompting: images in, images out (the original's evaluation/vqlm_demo/inference.py).

Sequential prompting continues a run of frames; analogy prompting lays out x₁ y₁ … x_k y_k x_q and
writes y_q. Both go images → VQGAN codes → `GenerationEngine` → codes → images. The context is a
sliding window over whole images, as in the original: at most `max_images − 1` images of context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from lvm.generation.engine import GenerationEngine
from lvm.generation.sampler import SamplingConfig
from lvm.model.llama import LLaMA
from lvm.tokenizer.codec import decode_codes, encode_images
from lvm.tokenizer.vqgan import VQGANModel


def as_engine(model: LLaMA | GenerationEngine) -> GenerationEngine:
    return model if isinstance(model, GenerationEngine) else GenerationEngine(model)


def context_frame_indices(n_frames: int, n_context: int | None, stride: int = 1) -> list[int]:
    """Indices of the context frames of a run of `n_frames`: every `stride`-th frame counted back from the
    last (the one the next frame follows), at most `n_context` of them (None: all), in order."""
    return list(range(n_frames - 1, -1, -stride))[:n_context][::-1]


def images_per_window(max_seq_len: int, n: int, max_images: int | None = None) -> int:
    """The most whole images of `n` tokens one sequence holds: `max_images`, or as many as `max_seq_len` fits.
    Refused below 2: an image to read and one to write."""
    max_images = max_images or max_seq_len // n
    if max_images < 2:
        raise ValueError(f"the model's max_seq_len {max_seq_len} holds fewer than 2 images of {n} tokens")
    return max_images


def continue_image_codes(
    model: LLaMA | GenerationEngine,
    contexts: Sequence[torch.Tensor],
    n_new_images: int,
    sampling: SamplingConfig,
    n_candidates: int = 1,
    max_images: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Codes of each prompt's context images (N_b, n) → codes of the next `n_new_images` images of every
    prompt, (B, n_candidates, n_new_images, n); the prompts are decoded together as one batch.

    Each image is written from every image before it while they fit in `max_images` (default: as many
    as max_seq_len holds); after that from the last `max_images − 1` images (the original's sliding
    window over whole images). A context longer than that keeps its last `max_images − 1` images.
    """
    engine = as_engine(model)
    sizes = {int(c.shape[1]) for c in contexts}
    if len(sizes) != 1 or any(c.ndim != 2 or c.shape[0] == 0 for c in contexts):
        raise ValueError(
            f"contexts must be non-empty (images, tokens per image) tensors with one image size; got "
            f"shapes {[tuple(c.shape) for c in contexts]}"
        )
    n = sizes.pop()
    max_images = images_per_window(engine.model.config.max_seq_len, n, max_images)
    window = (max_images - 1) * n
    rows = [c.reshape(-1)[-window:] for c in contexts]
    written: list[torch.Tensor] = []  # chunks of (B·n_candidates, images, n)
    n_written = 0
    while n_written < n_new_images:
        chunk = min(max_images - max(len(r) for r in rows) // n, n_new_images - n_written)
        # Candidates fork on the first chunk only; afterwards each row continues its own candidate.
        fork = 1 if written else n_candidates
        new = engine.generate(rows, chunk * n, sampling, fork, generator)
        rows = [torch.cat([rows[j // fork].to(new.device), new[j]])[-window:] for j in range(new.shape[0])]
        written.append(new.view(new.shape[0], chunk, n))
        n_written += chunk
    return torch.cat(written, dim=1).view(len(contexts), n_candidates, n_new_images, n)


def restrict_to_codebook(sampling: SamplingConfig, vqgan: VQGANModel) -> SamplingConfig:
    """Restrict sampling to the codes this tokenizer actually has."""
    return replace(sampling, num_vq_codes=min(sampling.num_vq_codes, vqgan.config.num_embeddings))


def sequential_prompting(
    model: LLaMA | GenerationEngine,
    vqgan: VQGANModel,
    frames: torch.Tensor,
    n_new_frames: int = 1,
    sampling: SamplingConfig | None = None,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frames (N, 3, H, W) in [0, 1] → next frames (n_candidates, n_new_frames, 3, H, W) in [0, 1]."""
    sampling = restrict_to_codebook(sampling or SamplingConfig(), vqgan)
    codes = encode_images(vqgan, frames)
    new = continue_image_codes(model, [codes], n_new_frames, sampling, n_candidates, generator=generator)[0]
    images = decode_codes(vqgan, new.reshape(-1, codes.shape[1]))
    return images.view(n_candidates, n_new_frames, *images.shape[1:])


def analogy_prompting(
    model: LLaMA | GenerationEngine,
    vqgan: VQGANModel,
    examples: list[tuple[torch.Tensor, torch.Tensor]],
    query: torch.Tensor,
    sampling: SamplingConfig | None = None,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(x, y) example pairs (each (3, H, W)) + query x → candidate y's (n_candidates, 3, H, W)."""
    if not examples:
        raise ValueError("analogy prompting needs at least one (x, y) example pair")
    sequence = [image for pair in examples for image in pair] + [query]  # x₁ y₁ … x_k y_k x_q
    return sequential_prompting(model, vqgan, torch.stack(sequence), 1, sampling, n_candidates, generator)[:, 0]

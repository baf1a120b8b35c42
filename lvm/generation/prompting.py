"""Visual prompting: images in, images out (spec §7).

Sequential prompting continues a run of frames; analogy prompting lays out x₁ y₁ … x_k y_k x_q and
writes y_q. Both go images → VQGAN codes → `generate_tokens` → codes → images. The context is a
sliding window over whole images, as in the original: at most `max_images − 1` images of context.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from lvm.generation.sampler import SamplingConfig, generate_tokens
from lvm.model.llama import LLaMA
from lvm.tokenizer.codec import decode_codes, encode_images
from lvm.tokenizer.vqgan import VQGANModel


def continue_image_codes(
    model: LLaMA,
    context_codes: torch.Tensor,
    n_new_images: int,
    sampling: SamplingConfig,
    n_candidates: int = 1,
    max_images: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Codes of context images (N, n) → codes of `n_new_images` next images (n_candidates, n_new_images, n).

    The first call writes as many images as fit beside the context; later images are written one at a
    time from the last `max_images − 1` images (the original's sliding window).
    """
    n = context_codes.shape[1]
    max_images = max_images or model.config.max_seq_len // n
    if max_images < 2:
        raise ValueError(f"the model's max_seq_len {model.config.max_seq_len} holds fewer than 2 images of {n} tokens")
    context = context_codes[-(max_images - 1) :].reshape(1, -1)  # (1, images·n)
    written: list[torch.Tensor] = []  # chunks of (n_candidates, images, n)
    n_written = 0
    while n_written < n_new_images:
        in_context = context.shape[1] // n
        chunk = min(max_images - in_context, n_new_images - n_written)
        # Candidates fork on the first chunk only; afterwards each row continues its own candidate.
        new = generate_tokens(model, context, chunk * n, sampling, 1 if written else n_candidates, generator)
        context = torch.cat([context.expand(new.shape[0], -1), new], dim=1)[:, -(max_images - 1) * n :]
        written.append(new.view(new.shape[0], chunk, n))
        n_written += chunk
    return torch.cat(written, dim=1)


def _vq_only(sampling: SamplingConfig, vqgan: VQGANModel) -> SamplingConfig:
    """Restrict sampling to the codes this tokenizer actually has."""
    return replace(sampling, num_vq_codes=min(sampling.num_vq_codes, vqgan.config.num_embeddings))


def sequential_prompting(
    model: LLaMA,
    vqgan: VQGANModel,
    frames: torch.Tensor,
    n_new_frames: int = 1,
    sampling: SamplingConfig | None = None,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frames (N, 3, H, W) in [0, 1] → next frames (n_candidates, n_new_frames, 3, H, W) in [0, 1]."""
    sampling = _vq_only(sampling or SamplingConfig(), vqgan)
    codes = encode_images(vqgan, frames)
    new = continue_image_codes(model, codes, n_new_frames, sampling, n_candidates, generator=generator)
    images = decode_codes(vqgan, new.reshape(-1, codes.shape[1]))
    return images.view(n_candidates, n_new_frames, *images.shape[1:])


def analogy_prompting(
    model: LLaMA,
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

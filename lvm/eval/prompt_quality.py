"""Generation quality of visual prompts in pixels: PSNR of generated images against the truth, next to
the baselines a reader needs to judge it (the demo's `summary.json` and the training gallery use these).

Every image set is (N, 3, H, W) float in [0, 1]. PSNR of a set is computed from the mean squared error
over all its pixels (torchmetrics' `PeakSignalNoiseRatio`, data range 1), as the tokenizer's PSNR is:
one number per set, never infinite, not a mean of per-image PSNRs.

Task names: a prompt made of the frames of a video or an image sequence asks for the `next_frame`;
a paired-annotation prompt asks for its task's output (`gray`, `edges`, ...; the sentence's
`meta["task"]`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import bootstrap
from torchmetrics.image import PeakSignalNoiseRatio

from lvm.generation.engine import GenerationEngine
from lvm.generation.prompting import continue_image_codes, images_per_window, restrict_to_codebook
from lvm.generation.sampler import SamplingConfig
from lvm.model.llama import LLaMA
from lvm.tokenizer.codec import decode_codes, encode_images
from lvm.tokenizer.vqgan import VQGANModel

NEXT_FRAME = "next_frame"
FRAME_KINDS = ("video", "sequence")  # sentence kinds whose images are frames in time order


def task_of(kind: str, meta: Mapping | None = None) -> str:
    """The task a sentence of this kind poses: `next_frame` for frame runs, else its `meta["task"]`
    (paired annotations), else the kind itself."""
    if kind in FRAME_KINDS:
        return NEXT_FRAME
    return str((meta or {}).get("task", kind))


def set_psnr(generated: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR (dB) of a set of images (N, 3, H, W) in [0, 1] against the truth, from the pooled MSE."""
    if generated.shape != truth.shape:
        raise ValueError(f"set_psnr: generated {tuple(generated.shape)} and truth {tuple(truth.shape)} differ")
    metric = PeakSignalNoiseRatio(data_range=1.0)
    metric.update(generated.float().clamp(0, 1), truth.float())
    return float(metric.compute())


def per_image_mse(images: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """(N,) mean squared error of each image (N, 3, H, W) in [0, 1] against its truth, in float64."""
    if images.shape != truth.shape:
        raise ValueError(f"per_image_mse: images {tuple(images.shape)} and truth {tuple(truth.shape)} differ")
    return (images.double().clamp(0, 1) - truth.double()).pow(2).flatten(1).mean(dim=1).numpy()


def psnr_gain_interval(
    generated: torch.Tensor, baseline: torch.Tensor, truth: torch.Tensor, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Confidence interval (dB) of the set PSNR of `generated` minus that of `baseline` on the same prompts:
    a paired bootstrap over prompts (scipy's BCa), so a gain can be told from which prompts were drawn."""
    generated_mse = per_image_mse(generated, truth).clip(min=1e-12)
    baseline_mse = per_image_mse(baseline, truth).clip(min=1e-12)
    if generated_mse.shape[0] < 2:
        raise ValueError("psnr_gain_interval: a bootstrap over prompts needs at least 2 prompts")

    def gain(generated: np.ndarray, baseline: np.ndarray, axis: int = -1) -> np.ndarray:
        # One resample's per-prompt MSEs pooled per set, as set_psnr pools them: 10·log10(mse_base / mse_gen).
        return 10 * np.log10(baseline.mean(axis=axis) / generated.mean(axis=axis))

    result = bootstrap(
        (generated_mse, baseline_mse),
        gain,
        paired=True,
        vectorized=True,
        n_resamples=2000,
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_saturation(images: torch.Tensor) -> float:
    """Mean HSV saturation (max − min) / max of the RGB channels over all pixels (0 for gray images;
    black pixels count as 0)."""
    high = images.amax(dim=-3)
    low = images.amin(dim=-3)
    return float(torch.where(high > 0, (high - low) / high.clamp_min(1e-12), torch.zeros_like(high)).mean())


def mean_colour_images(images: torch.Tensor) -> torch.Tensor:
    """Each image painted with its own mean colour (an oracle: it knows the truth's average)."""
    return images.mean(dim=(-2, -1), keepdim=True).expand_as(images).clone()


def baseline_images(task: str, contexts: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """The pixel baselines of one task, each (N, 3, H, W). `contexts` (N, n_context, 3, H, W) are the
    prompts' images; the last one is the previous frame or the analogy's query.

    - next_frame: `copy_last_frame` (no motion) and `mean_colour` (the true frame's mean colour);
    - any other task: `copy_query` (the query unchanged); for `edges` also `black` (no edges at all).
    """
    last = contexts[:, -1]
    if task == NEXT_FRAME:
        return {"copy_last_frame": last, "mean_colour": mean_colour_images(truth)}
    out = {"copy_query": last}
    if task == "edges":
        out["black"] = torch.zeros_like(truth)
    return out


@dataclass
class PromptSet:
    """Held-out prompts of one task: `contexts` (N, n_context, 3, H, W) and the image that follows each,
    `truth` (N, 3, H, W), both float in [0, 1]; all prompts of a set have the same number of images."""

    task: str
    contexts: torch.Tensor
    truth: torch.Tensor

    def __post_init__(self) -> None:
        if self.contexts.ndim != 5 or self.truth.ndim != 4 or self.contexts.shape[0] != self.truth.shape[0]:
            raise ValueError(
                f"PromptSet {self.task!r}: expected contexts (N, n, 3, H, W) and truth (N, 3, H, W), got "
                f"{tuple(self.contexts.shape)} and {tuple(self.truth.shape)}"
            )


def as_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """Images rounded to the 256 levels a saved PNG holds (still float in [0, 1])."""
    return images.float().clamp(0, 1).mul(255).round().div(255)


@dataclass
class PromptCodes:
    """A `PromptSet` as the tokenizer's codes, encoded once (`encode_prompts`) for every use: `context`
    (N, n_context, n) and `truth` (N, n) int64."""

    context: torch.Tensor
    truth: torch.Tensor


@torch.no_grad()
def encode_prompts(vqgan: VQGANModel, prompts: PromptSet) -> PromptCodes:
    """The codes of a prompt set's context images and truths (`encode_images`)."""
    n, n_context = prompts.contexts.shape[:2]
    context = encode_images(vqgan, prompts.contexts.flatten(0, 1)).view(n, n_context, -1)
    return PromptCodes(context, encode_images(vqgan, prompts.truth))


@torch.no_grad()
def generate_next_images(
    model: LLaMA | GenerationEngine,
    vqgan: VQGANModel,
    codes: PromptCodes,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each prompt's next image (N, 3, H, W), written by the LVM in one batch (greedy by default) after the
    prompt's context codes, decoded by the VQGAN and rounded to uint8 levels."""
    sampling = restrict_to_codebook(sampling or SamplingConfig(temperature=0.0), vqgan)
    new = continue_image_codes(model, list(codes.context), 1, sampling, generator=generator)[:, 0, 0]
    return as_uint8_levels(decode_codes(vqgan, new))


@torch.no_grad()
def teacher_forced_codes(model: LLaMA, context: torch.Tensor, truth: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Context codes (N, k·n) and the true next image's codes (N, n) → (N, n): at every place of the next image
    the LVM's likeliest code (among the first `num_codes` ids) given the context and the true codes before that
    place. The context is cut to its last whole images as `continue_image_codes` cuts it, so both read the same."""
    n = truth.shape[1]
    window = (images_per_window(model.config.max_seq_len, n) - 1) * n
    tokens = torch.cat([context[:, -window:], truth], dim=1)
    logits = model(tokens[:, :-1].to(model.embed_tokens.weight.device))[:, -n:, :num_codes]
    return logits.argmax(-1).cpu()


def teacher_forced_next_images(model: LLaMA, vqgan: VQGANModel, codes: PromptCodes) -> torch.Tensor:
    """Each prompt's next image as `teacher_forced_codes` writes it, decoded like `generate_next_images`.

    Not a generation: the true codes before a place carry part of what belongs there. Its gap to the greedy
    images is what writing on its own costs the LVM (README, "The start of an answer decides it")."""
    answer = teacher_forced_codes(model, codes.context.flatten(1), codes.truth, vqgan.config.num_embeddings)
    return as_uint8_levels(decode_codes(vqgan, answer))


def pixel_report(
    generated: dict[str, torch.Tensor],
    prompts: dict[str, PromptSet],
    vqgan: VQGANModel,
    code_lookups: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    teacher_forced: Mapping[str, torch.Tensor] | None = None,
    codes: Mapping[str, PromptCodes] | None = None,
) -> dict:
    """The demo's pixel figures: `generated_psnr` per task, `baseline_psnr` per task (the baselines of
    `baseline_images` and `tokenizer_ceiling`, the VQGAN's own round trip of the truth: what an LVM that
    writes exactly the true codes gets), `n_prompts` per task, and when the gray task is there
    `gray_saturation` (mean HSV saturation of the generated gray images) next to
    `gray_saturation_ceiling` (that of the VQGAN's round trip of the gray truth: the least an LVM that
    writes exactly the true codes shows), and `psnr_gain_interval`: per task and baseline, the 95 % interval
    of generated − baseline PSNR over the prompts (`psnr_gain_interval`; with 2+ prompts).

    `code_lookups` (task → query codes → answer codes, e.g. `lvm.eval.code_lookup.CodeLookup`) add the
    baseline `code_lookup` to their tasks: the query's codes mapped through the table, decoded.
    `teacher_forced` (task → `teacher_forced_next_images`) adds `teacher_forced_psnr` per task and, for the gray
    task, `teacher_forced_gray_saturation`. `codes` (task → `encode_prompts`) are the prompts' codes where the
    caller has them already; the others are encoded here."""
    report: dict = {"generated_psnr": {}, "baseline_psnr": {}, "psnr_gain_interval": {}, "n_prompts": {}}
    for task, prompt_set in prompts.items():
        truth = prompt_set.truth
        task_codes = codes[task] if codes and task in codes else encode_prompts(vqgan, prompt_set)
        report["generated_psnr"][task] = set_psnr(generated[task], truth)
        ceiling = as_uint8_levels(decode_codes(vqgan, task_codes.truth))
        baselines = baseline_images(task, prompt_set.contexts, truth) | {"tokenizer_ceiling": ceiling}
        if code_lookups and task in code_lookups:
            answer_codes = code_lookups[task](task_codes.context[:, -1])
            baselines["code_lookup"] = as_uint8_levels(decode_codes(vqgan, answer_codes))
        report["baseline_psnr"][task] = {name: set_psnr(images, truth) for name, images in baselines.items()}
        if truth.shape[0] >= 2:
            report["psnr_gain_interval"][task] = {
                name: list(psnr_gain_interval(generated[task], images, truth)) for name, images in baselines.items()
            }
        report["n_prompts"][task] = int(truth.shape[0])
        if task == "gray":
            report["gray_saturation"] = mean_saturation(generated[task])
            report["gray_saturation_ceiling"] = mean_saturation(ceiling)
        if teacher_forced and task in teacher_forced:
            report.setdefault("teacher_forced_psnr", {})[task] = set_psnr(teacher_forced[task], truth)
            if task == "gray":
                report["teacher_forced_gray_saturation"] = mean_saturation(teacher_forced[task])
    return report

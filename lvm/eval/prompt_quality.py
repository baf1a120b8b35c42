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

from collections.abc import Mapping

import torch
from torchmetrics.image import PeakSignalNoiseRatio

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

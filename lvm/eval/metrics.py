"""Image metrics of generated images against their targets, with torchmetrics.

- PSNR (data_range 1) and SSIM (Gaussian window 11, σ 1.5, k1 0.01, k2 0.03, mean over the pixels whose
  window fits in the image, as scikit-image) per (generated, target) pair, averaged over pairs;
  best-of-n: per prompt the best candidate's value, averaged over prompts.
- FID between every candidate (fake) and the prompts' targets (real, one per prompt), only when the
  user names local InceptionV3 weights (torch-fidelity's `pt_inception-2015-12-05-6726825d.pth`):
  nothing is ever downloaded. Without them FID is not computed and the summary says so.

Common size: both images of a pair are read as the model's inputs are prepared (RGB, resized to
`size`×`size` with PIL's default filter, aspect ratio not kept); `size=None` compares at the target's
own size, the generated image resized to it. Pixels are uint8 from the files, /255 for PSNR/SSIM.

Input: the batch-generation results file `<output_dir>/results.jsonl`, one line per prompt
{"id": str, "candidates": [PNG paths relative to output_dir], "target": path or null}; a relative
target is under output_dir too. Prompts without a target are counted and left out.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lvm.core.atomic_files import write_csv_atomic, write_json_atomic
from lvm.core.json_files import iter_json_objects
from lvm.core.weights import load_state_dict_file
from lvm.media.images import ImageReadError, read_image_array

log = logging.getLogger(__name__)

TORCH_FIDELITY_PIN = "torch-fidelity==0.4.0"
NO_FID_NOTE = (
    "not computed: no inception_weights given. FID needs local InceptionV3 weights (torch-fidelity's "
    "pt_inception-2015-12-05-6726825d.pth); nothing is downloaded"
)


# --- the results file --------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """One prompt of a batch-generation run: its candidates and its target (None when it has none)."""

    id: str
    candidates: list[Path]
    target: Path | None


def read_generation_results(path: str | os.PathLike) -> list[GenerationResult]:
    """The prompts of `<output_dir>/results.jsonl`, paths resolved against output_dir (the file's
    folder). A malformed line is a ValueError naming the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results: {path} is not a file (expected <output_dir>/results.jsonl)")
    root = path.parent
    results = []
    for _, where, record in iter_json_objects(path):
        if isinstance(record, ValueError):
            raise record
        for key in ("id", "candidates", "target"):
            if key not in record:
                raise ValueError(f"{where}: no field '{key}' (fields: {sorted(record)})")
        candidates, target = record["candidates"], record["target"]
        if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) for c in candidates):
            raise ValueError(
                f"{where}: field 'candidates' must be a non-empty list of paths, got {json.dumps(candidates)[:200]}"
            )
        if target is not None and not isinstance(target, str):
            raise ValueError(f"{where}: field 'target' must be a path or null, got {json.dumps(target)[:200]}")
        results.append(
            GenerationResult(
                id=str(record["id"]),
                candidates=[root / c for c in candidates],
                target=None if target is None else root / target,
            )
        )
    return results


# --- images ------------------------------------------------------------------------------------------


def read_pair(
    generated: str | os.PathLike, target: str | os.PathLike, size: int | None = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(generated, target) as HWC uint8 RGB of one size: both `size`×`size`, or with `size=None` the
    target's own size (the generated image resized to it with PIL's default filter)."""
    target_pixels = read_image_array(target, size=size) if size is not None else _read_own_size(target)
    height, width = target_pixels.shape[:2]
    if size is not None:
        return read_image_array(generated, size=size), target_pixels
    with Image.open(generated) as image:
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height))
        return np.asarray(image, dtype=np.uint8), target_pixels


def _read_own_size(path: str | os.PathLike) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read image ({err})") from err


def to_float(pixels: np.ndarray) -> torch.Tensor:
    """HWC (or BHWC) uint8 → CHW (BCHW) float32 in [0, 1]."""
    return torch.from_numpy(pixels.astype(np.float32) / 255.0).movedim(-1, -3).contiguous()


SSIM_WINDOW = 11  # Gaussian window (σ 1.5) of Wang et al. (2004)


def psnr_ssim(generated: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR (dB; data_range 1) and SSIM of each pair: images (N, 3, H, W) in [0, 1] → two (N,) tensors.
    Identical images have PSNR inf. SSIM is averaged over the pixels whose whole window lies inside the
    image, as Wang et al.'s reference code and scikit-image do (torchmetrics' own mean also counts the
    reflect-padded border, which raises nothing but lowers the value a little)."""
    if generated.shape != targets.shape:
        raise ValueError(f"psnr_ssim: generated {tuple(generated.shape)} and targets {tuple(targets.shape)} differ")
    if min(generated.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"psnr_ssim: images of {tuple(generated.shape[-2:])} px are smaller than SSIM's {SSIM_WINDOW}-px window"
        )
    psnr = peak_signal_noise_ratio(generated, targets, data_range=1.0, reduction="none", dim=(1, 2, 3))
    _, ssim_map = structural_similarity_index_measure(
        generated, targets, data_range=1.0, kernel_size=SSIM_WINDOW, sigma=1.5, return_full_image=True
    )
    pad = SSIM_WINDOW // 2
    return psnr, ssim_map[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))


# --- FID -----------------------------------------------------------------------------------------------


def check_inception_weights(path: str | os.PathLike) -> Path:
    """`path` exists and holds a plain state dict of tensors (read with weights_only=True, so no pickled
    code runs before torch-fidelity reads it again); otherwise an error naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"inception_weights: {path} does not exist (give torch-fidelity's InceptionV3 "
            "weights, pt_inception-2015-12-05-6726825d.pth, or inception_weights=null to skip "
            "FID)"
        )
    if not path.is_file():
        raise ValueError(f"inception_weights: {path} is not a file")
    load_state_dict_file(path)
    return path


def make_fid(weights_path: str | os.PathLike, feature: int = 2048):
    """torchmetrics' FrechetInceptionDistance on torch-fidelity's InceptionV3 with the weights at
    `weights_path` (uint8 inputs, as the reference implementation takes them)."""
    path = check_inception_weights(weights_path)
    try:
        importlib.import_module("torch_fidelity")  # torchmetrics' InceptionV3 comes from it
    except ImportError as err:
        raise ImportError(
            f"FID needs {TORCH_FIDELITY_PIN} and a torchvision matching your torch "
            f"(pip install {TORCH_FIDELITY_PIN}): {err}"
        ) from err
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        return FrechetInceptionDistance(feature=feature, normalize=False, feature_extractor_weights_path=str(path))
    except RuntimeError as err:  # load_state_dict: missing/unexpected keys
        raise ValueError(f"inception_weights: {path} is not torch-fidelity's InceptionV3 ({err})") from err


# --- the evaluation ------------------------------------------------------------------------------------


@dataclass
class PairScore:
    """Metrics of one (candidate, target) pair."""

    id: str
    candidate: str
    target: str
    psnr: float
    ssim: float


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def evaluate_generations(
    results: str | os.PathLike,
    out_dir: str | os.PathLike,
    size: int | None = 256,
    inception_weights: str | os.PathLike | None = None,
    fid_feature: int = 2048,
    progress: bool = True,
) -> dict:
    """PSNR/SSIM of every candidate against its prompt's target (and best-of-n), FID when
    `inception_weights` is given; writes `image_metrics.csv` (one row per pair) and `image_metrics.json`
    (the summary) to `out_dir` and returns the summary."""
    prompts = read_generation_results(results)
    with_target = [p for p in prompts if p.target is not None]
    if not with_target:
        raise ValueError(f"{results}: none of its {len(prompts)} prompts has a target; nothing to compare")
    fid = make_fid(inception_weights, fid_feature) if inception_weights is not None else None
    pairs: list[PairScore] = []
    best_psnr, best_ssim = [], []
    for prompt in track(with_target, description="image metrics", disable=not progress):
        generated, targets = [], []
        for candidate in prompt.candidates:
            try:
                g, t = read_pair(candidate, prompt.target, size)
            except (ImageReadError, OSError) as err:
                raise ValueError(f"{results}: prompt {prompt.id!r}: {err}") from err
            generated.append(g)
            targets.append(t)
        psnr, ssim = psnr_ssim(to_float(np.stack(generated)), to_float(np.stack(targets)))
        pairs += [
            PairScore(prompt.id, str(c), str(prompt.target), float(p), float(s))
            for c, p, s in zip(prompt.candidates, psnr, ssim)
        ]
        best_psnr.append(float(psnr.max()))
        best_ssim.append(float(ssim.max()))
        if fid is not None:
            fid.update(torch.from_numpy(np.stack(generated)).permute(0, 3, 1, 2), real=False)
            fid.update(torch.from_numpy(np.stack(targets[:1])).permute(0, 3, 1, 2), real=True)
    summary = {
        "task": "image_metrics",
        "results": str(results),
        "image_size": size,
        "n_prompts": len(prompts),
        "n_without_target": len(prompts) - len(with_target),
        "n_pairs": len(pairs),
        "psnr": _mean([p.psnr for p in pairs]),
        "ssim": _mean([p.ssim for p in pairs]),
        "best_of_n_psnr": _mean(best_psnr),
        "best_of_n_ssim": _mean(best_ssim),
    }
    if fid is None:
        summary.update(fid=None, fid_note=NO_FID_NOTE)
    elif len(pairs) < 2 or len(with_target) < 2:
        summary.update(
            fid=None,
            fid_note=f"not computed: FID needs ≥ 2 generated and ≥ 2 target images, got "
            f"{len(pairs)} and {len(with_target)}",
        )
    else:
        summary.update(
            fid=float(fid.compute()),
            fid_feature=fid_feature,
            fid_weights=str(inception_weights),
            fid_note=f"{len(pairs)} candidates vs {len(with_target)} targets",
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "image_metrics.csv", out_dir / "image_metrics.json"
    write_csv_atomic(csv_path, [vars(p) for p in pairs])
    write_json_atomic(json_path, summary)
    summary["csv"], summary["json"] = str(csv_path), str(json_path)
    print_metrics(summary)
    log.info(
        "image metrics of %s: %d pairs, PSNR %.3f dB (best of n %.3f), SSIM %.4f, FID %s; results in %s and %s",
        results,
        len(pairs),
        summary["psnr"],
        summary["best_of_n_psnr"],
        summary["ssim"],
        summary["fid"] if summary["fid"] is not None else summary["fid_note"],
        csv_path,
        json_path,
    )
    return summary


def print_metrics(summary: dict, console: Console | None = None) -> None:
    """The summary as a rich table."""
    table = Table(title=f"image metrics ({summary['n_pairs']} pairs)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("n_prompts", "n_without_target", "n_pairs", "psnr", "best_of_n_psnr", "ssim", "best_of_n_ssim", "fid"):
        value = summary[key]
        text = (
            summary["fid_note"]
            if key == "fid" and value is None
            else (f"{value:.4f}" if isinstance(value, float) else str(value))
        )
        table.add_row(key, text)
    (console or Console()).print(table)

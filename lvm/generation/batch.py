"""Batch generation as the original's evaluation runs it (the original's evaluation/vqlm_demo/inference.py): prompts
from a jsonl file or a folder
→ `n_candidates` images per prompt in an output folder, a PNG grid per prompt, resumable.

Prompt sources:
- a jsonl file, one prompt per line: `{"id": "...", "input": [image paths], "target": "path"}` — `input`
  may also be one video file or one folder of frames; `id` and `target` are optional; key names are
  options; relative paths are taken from `base_dir` (default: the jsonl's folder);
- a folder of prompt folders: each subfolder is a prompt, its images in natural order (x₁ y₁ … x_q
  for an analogy, frames for a sequence), a file named `target.*` its ground truth.

Output, per prompt `<out>/<id>/` (paths in results are relative to `<out>`, inputs and target absolute):
`candidate_<c>.png` (the first new image of candidate c; with
`n_new_frames` > 1 also `candidate_<c>_frame_<f>.png`), `grid.png` (one row per candidate: prompt |
new images | target) and `result.json`, written last. `<out>/results.jsonl` lists every prompt's result.

Resuming: prompts are cut into fixed batches in file order and batch i is sampled with seed `seed + i`,
so a rerun skips the batches whose prompts all have a `result.json` and regenerates any other batch
exactly as the first run would have.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lvm.core.atomic_files import write_json_atomic
from lvm.core.json_files import iter_json_objects
from lvm.generation.engine import GenerationEngine
from lvm.generation.prompting import context_frame_indices, continue_image_codes, restrict_to_codebook
from lvm.generation.sampler import SamplingConfig
from lvm.media.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, natural_sort_key
from lvm.media.images import load_image, tensor_to_uint8, uint8_to_tensor
from lvm.media.video import read_video_frames, resize_video_frame
from lvm.tokenizer.codec import decode_codes, encode_images
from lvm.tokenizer.grid import save_png, tile_images
from lvm.tokenizer.vqgan import VQGANModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisualPrompt:
    """One prompt: its images in order (or one video file / frame folder) and an optional ground truth."""

    id: str
    inputs: tuple[Path, ...]
    target: Path | None = None


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=lambda p: natural_sort_key(p.name),
    )


def read_prompts(
    source: str | os.PathLike,
    input_key: str = "input",
    target_key: str = "target",
    id_key: str = "id",
    base_dir: str | os.PathLike | None = None,
) -> list[VisualPrompt]:
    """The prompts of a jsonl file or a folder of prompt folders (see the module docstring)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"prompts: {source} does not exist")
    if source.is_dir():
        return _prompts_from_folder(source)
    base = Path(base_dir) if base_dir is not None else source.parent
    prompts = []
    for number, where, record in iter_json_objects(source):
        if isinstance(record, ValueError):
            raise record
        if input_key not in record:
            raise ValueError(f"{where}: no field '{input_key}' (expected a list of image paths, a video or a folder)")
        inputs = record[input_key]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not inputs or not all(isinstance(p, str) for p in inputs):
            raise ValueError(f"{where}: field '{input_key}' must be a non-empty list of paths, got {inputs!r}")
        target = record.get(target_key)
        if target is not None and not isinstance(target, str):
            raise ValueError(f"{where}: field '{target_key}' must be a path, got {target!r}")
        prompt_id = str(record.get(id_key, f"{number - 1:06d}"))
        if not prompt_id or "/" in prompt_id or prompt_id in (".", ".."):
            raise ValueError(f"{where}: field '{id_key}' {prompt_id!r} cannot name an output folder")
        prompts.append(VisualPrompt(prompt_id, tuple(base / p for p in inputs), base / target if target else None))
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: prompt id {next(i for i in ids if ids.count(i) > 1)!r} appears twice")
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    return prompts


def _prompts_from_folder(folder: Path) -> list[VisualPrompt]:
    prompts = []
    for sub in sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_sort_key(p.name),
    ):
        images = _images_in(sub)
        targets = [p for p in images if p.stem == "target"]
        inputs = [p for p in images if p.stem != "target"]
        if not inputs:
            raise ValueError(f"{sub}: a prompt folder without input images ({', '.join(IMAGE_EXTENSIONS)})")
        prompts.append(VisualPrompt(sub.name, tuple(inputs), targets[0] if targets else None))
    if not prompts:
        raise ValueError(f"{folder}: no prompt folders (one subfolder of images per prompt)")
    return prompts


def load_prompt_frames(
    prompt: VisualPrompt,
    size: int,
    max_frames: int | None = None,
    frame_stride: int = 1,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The prompt's images (N, 3, size, size) in [0, 1] and the (width, height) of its last input file
    (what `resize_output="original"` restores). A video or frame folder gives every `frame_stride`-th frame
    counted back from its last, at most `max_frames` of them (`context_frame_indices`)."""
    if len(prompt.inputs) == 1 and (_is_video(prompt.inputs[0]) or prompt.inputs[0].is_dir()):
        source = prompt.inputs[0]
        if source.is_dir():
            files = _images_in(source)
            files = [files[i] for i in context_frame_indices(len(files), max_frames, frame_stride)]
            if not files:
                raise ValueError(f"prompt {prompt.id}: {source} holds no images")
            frames = torch.stack([load_image(f, size) for f in files])
            last = files[-1]
        else:
            arrays = read_video_frames(source, size=None)
            arrays = [arrays[i] for i in context_frame_indices(len(arrays), max_frames, frame_stride)]
            original = arrays[-1].shape[1], arrays[-1].shape[0]
            frames = torch.stack([uint8_to_tensor(resize_video_frame(a, size)) for a in arrays])
            return frames, original
    else:
        files = list(prompt.inputs)[-max_frames if max_frames else None :]
        frames = torch.stack([load_image(f, size) for f in files])
        last = files[-1]
    with Image.open(last) as image:
        return frames, image.size


def _resize(
    image: np.ndarray, resize_output: str | int | Sequence[int] | None, original: tuple[int, int]
) -> np.ndarray:
    """(H, W, 3) uint8 → resized per `resize_output`: None (as generated), "original" (the prompt's last
    input size), an int (square side) or [height, width]."""
    if resize_output is None:
        return image
    if resize_output == "original":
        width, height = original
    elif isinstance(resize_output, int):
        width = height = resize_output
    elif isinstance(resize_output, Sequence) and not isinstance(resize_output, str) and len(resize_output) == 2:
        height, width = (int(v) for v in resize_output)
    else:
        raise ValueError(f"resize_output must be null, 'original', a side or [height, width]; got {resize_output!r}")
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def _write_prompt_outputs(
    prompt: VisualPrompt,
    out_dir: Path,
    prompt_images: torch.Tensor,
    new_images: torch.Tensor,
    original_size: tuple[int, int],
    resize_output,
    include_input: bool,
    size: int,
) -> dict:
    """Candidate PNGs, the grid and result.json (last) for one prompt; new_images (C, F, 3, S, S)."""
    folder = out_dir / prompt.id
    candidates, frames = [], []
    for c, candidate in enumerate(new_images):
        names = []
        for f, image in enumerate(candidate):
            name = f"candidate_{c}.png" if f == 0 else f"candidate_{c}_frame_{f}.png"
            save_png(_resize(tensor_to_uint8(image), resize_output, original_size), folder / name)
            names.append(f"{prompt.id}/{name}")
        candidates.append(names[0])
        frames.append(names)
    target = load_image(prompt.target, size)[None] if prompt.target is not None else None
    rows = []
    for candidate in new_images:
        row = [prompt_images] if include_input else []
        row += [candidate] + ([target] if target is not None else [])
        rows.append(torch.cat(row))
    columns = rows[0].shape[0]
    save_png(tensor_to_uint8(tile_images(torch.cat(rows), columns, padding=2, pad_value=1.0)), folder / "grid.png")
    # Generated files relative to out_dir (the folder can move); inputs and target absolute.
    result = {
        "id": prompt.id,
        "inputs": [str(p.resolve()) for p in prompt.inputs],
        "candidates": candidates,
        "frames": frames,
        "grid": f"{prompt.id}/grid.png",
        "target": str(prompt.target.resolve()) if prompt.target else None,
    }
    write_json_atomic(folder / "result.json", result)
    return result


def generate_for_prompts(
    engine: GenerationEngine,
    vqgan: VQGANModel,
    prompts: Sequence[VisualPrompt],
    out_dir: str | os.PathLike,
    sampling: SamplingConfig | None = None,
    n_new_frames: int = 1,
    n_candidates: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    resize_output: str | int | Sequence[int] | None = None,
    include_input: bool = True,
    max_context_frames: int | None = None,
    frame_stride: int = 1,
) -> list[dict]:
    """Generate every prompt's candidates into `out_dir` (see the module docstring); returns the results
    in prompt order, also written to `<out_dir>/results.jsonl`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampling = restrict_to_codebook(sampling or SamplingConfig(), vqgan)
    size = vqgan.config.resolution
    batches = [list(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    done = lambda p: (out_dir / p.id / "result.json").exists()
    skipped = sum(len(b) for b in batches if all(done(p) for p in b))
    if skipped:
        log.info("resuming: %d of %d prompts already generated in %s", skipped, len(prompts), out_dir)
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("prompts", total=len(prompts), completed=skipped)
        for index, batch in enumerate(batches):
            if all(done(p) for p in batch):
                continue
            loaded = [load_prompt_frames(p, size, max_context_frames, frame_stride) for p in batch]
            codes = [encode_images(vqgan, frames) for frames, _ in loaded]
            generator = torch.Generator(engine.device).manual_seed(seed + index)
            new = continue_image_codes(engine, codes, n_new_frames, sampling, n_candidates, generator=generator)
            images = decode_codes(vqgan, new.reshape(-1, new.shape[-1])).view(*new.shape[:3], 3, size, size)
            for prompt, (frames, original), prompt_new in zip(batch, loaded, images):
                _write_prompt_outputs(
                    prompt, out_dir, frames, prompt_new.cpu(), original, resize_output, include_input, size
                )
            progress.advance(task, len(batch))
    results = [json.loads((out_dir / p.id / "result.json").read_text()) for p in prompts]
    tmp = out_dir / "results.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in results))
    os.replace(tmp, out_dir / "results.jsonl")
    log.info("wrote %d prompts × %d candidates to %s", len(prompts), n_candidates, out_dir)
    return results

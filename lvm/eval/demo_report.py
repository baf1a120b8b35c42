"""What the demo shows of its LVM: the held-out prompts it is scored on (as PNGs and `prompts.json` for
`python -m lvm.app`), the pixel targets, the `prompts.png` grid and the console summary."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from lvm.core.atomic_files import write_json_atomic
from lvm.data.image_sentences import ImageSentence
from lvm.eval.prompt_quality import NEXT_FRAME, PromptSet, task_of
from lvm.media.images import images_to_tensor, tensor_to_uint8


def heldout_prompts(val: dict[str, list[ImageSentence]], per_task: int) -> dict[str, PromptSet]:
    """Up to `per_task` held-out prompts per task, in sentence order: a video sentence's frames but the last
    → its last frame (`next_frame`); an analogy sentence x₁ y₁ … x_k y_k x_q → y_q (`gray`, `edges`)."""
    grouped: dict[str, list[ImageSentence]] = {}
    for kind in ("video", "paired"):
        for sentence in val[kind]:
            grouped.setdefault(task_of(kind, sentence.meta), []).append(sentence)
    prompts = {}
    for task in sorted(grouped, key=lambda name: (name != NEXT_FRAME, name)):  # next_frame, then by name
        items = grouped[task]
        images = torch.stack([images_to_tensor(s.images) for s in items[:per_task]])
        prompts[task] = PromptSet(task, contexts=images[:, :-1], truth=images[:, -1])
    return prompts


def write_prompt_files(prompts: dict[str, PromptSet], run_dir: Path) -> Path:
    """The held-out prompts as PNGs under <run_dir>/prompts/ and their index prompts.json (paths relative to
    the run folder), the examples `python -m lvm.app` offers."""
    index: dict = {"version": 1, "next_frame": [], "analogy": []}
    for task, prompt_set in prompts.items():
        for i, (context, truth) in enumerate(zip(prompt_set.contexts, prompt_set.truth)):
            folder = Path("prompts") / f"{task}_{i:02d}"
            (run_dir / folder).mkdir(parents=True, exist_ok=True)

            def save(image: torch.Tensor, name: str, folder: Path = folder) -> str:
                Image.fromarray(tensor_to_uint8(image)).save(run_dir / folder / name)
                return str(folder / name)

            if task == NEXT_FRAME:
                frames = [save(frame, f"frame_{t:02d}.png") for t, frame in enumerate(context)]
                index["next_frame"].append({"frames": frames, "target": save(truth, "target.png")})
            else:
                examples = [
                    [save(context[2 * k], f"x_{k}.png"), save(context[2 * k + 1], f"y_{k}.png")]
                    for k in range(len(context) // 2)
                ]
                index["analogy"].append(
                    {
                        "task": task,
                        "examples": examples,
                        "query": save(context[-1], "query.png"),
                        "target": save(truth, "target.png"),
                    }
                )
    write_json_atomic(run_dir / "prompts.json", index)
    return run_dir / "prompts.json"


def prompt_rows(
    prompts: dict[str, PromptSet], generated: dict[str, torch.Tensor], per_task: int
) -> list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]]:
    """(task, prompt images, generated image, truth) for the first `per_task` prompts of each task."""
    rows = []
    for task, prompt_set in prompts.items():
        for i in range(min(per_task, prompt_set.truth.shape[0])):
            rows.append(
                (
                    task,
                    list(tensor_to_uint8(prompt_set.contexts[i])),
                    tensor_to_uint8(generated[task][i]),
                    tensor_to_uint8(prompt_set.truth[i]),
                )
            )
    return rows


def save_grid(rows: list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]], path: Path, gap: int = 4) -> None:
    """One row per prompt: prompt images | generated | ground truth, with white gaps between the blocks."""
    size = rows[0][2].shape[0]
    n_prompt = max(len(r[1]) for r in rows)
    width = (n_prompt + 2) * size + 3 * gap
    canvas = np.full((len(rows) * (size + gap), width, 3), 255, np.uint8)
    for i, (_, prompt, generated, truth) in enumerate(rows):
        y = i * (size + gap)
        for j, image in enumerate(prompt):
            canvas[y : y + size, j * size : (j + 1) * size] = image
        x = n_prompt * size + gap
        canvas[y : y + size, x : x + size] = generated
        canvas[y : y + size, x + size + gap : x + 2 * size + gap] = truth
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(canvas).save(tmp)
    os.replace(tmp, path)


def print_summary(summary: dict) -> None:
    table = Table(title="LVM demo: held-out next-token loss (nats/token; lower is better)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tokenizer PSNR, held-out video frames (dB)", f"{summary['tokenizer_psnr']:.2f}")
    table.add_row("tokenizer PSNR, held-out photo crops (dB)", f"{summary['tokenizer_psnr_photos']:.2f}")
    table.add_row("tokenizer codebook usage", f"{summary['tokenizer_codebook_usage']:.0%}")
    if "tokenizer_code_persistence" in summary:
        table.add_row(
            "tokenizer codes kept where a video patch does not change", f"{summary['tokenizer_code_persistence']:.0%}"
        )
    table.add_row("LVM val loss (all kinds)", f"{summary['val_loss']:.3f}")
    table.add_row("LVM val perplexity", f"{summary['val_ppl']:.1f}")
    table.add_row("unigram baseline loss", f"{summary['unigram_loss']:.3f}")
    if "copy_last_frame_loss" in summary:
        table.add_row("LVM loss, video frames 2+", f"{summary['val_loss_video_after_first_frame']:.3f}")
        table.add_row("copy-last-frame baseline, video frames 2+", f"{summary['copy_last_frame_loss']:.3f}")
    console = Console()
    console.print(table)
    pixels = Table(title="Greedy generations vs the truth, PSNR in dB (higher is better)")
    for column in ("task", "prompts", "LVM", "baselines"):
        pixels.add_column(column, justify="left" if column in ("task", "baselines") else "right")
    intervals = summary.get("psnr_gain_interval", {})
    for task, value in summary["generated_psnr"].items():
        baselines = []
        for name, psnr in summary["baseline_psnr"][task].items():
            low_high = intervals.get(task, {}).get(name)
            gain = f" [{low_high[0]:+.2f}, {low_high[1]:+.2f}]" if low_high else ""
            baselines.append(f"{name} {psnr:.2f}{gain}")
        pixels.add_row(task, str(summary["n_prompts"][task]), f"{value:.2f}", "\n".join(baselines))
    console.print(pixels)
    if intervals:
        print("[a, b]: the 95 % interval of LVM − baseline PSNR, from a paired bootstrap over the prompts")
    if "gray_saturation" in summary:
        print(
            f"Mean HSV saturation of the generated gray images: {summary['gray_saturation']:.3f} "
            f"(the tokenizer's round trip of the gray truth: {summary['gray_saturation_ceiling']:.3f})"
        )
    if "teacher_forced_psnr" in summary:
        forced = ", ".join(f"{task} {psnr:.2f}" for task, psnr in summary["teacher_forced_psnr"].items())
        print(
            f"Teacher-forced (the likeliest code given the true codes before each place; not a generation): {forced} "
            "dB; the gap to the LVM's column is what writing on its own costs it"
        )
    if "answer_first_token_loss_by_shot" in summary:
        by_shot = " → ".join(f"{loss:.2f}" for loss in summary["answer_first_token_loss_by_shot"])
        print(
            f"Analogy answers, loss on the first token by shot: {by_shot} (a model that infers the task from "
            "the examples lowers it shot by shot)"
        )
    print(f"Corpus files skipped as unreadable: {summary['skipped_files']}")
    verdict = "beats" if summary["beats_unigram"] else "does NOT beat"
    print(
        f"The LVM {verdict} the unigram baseline; it "
        f"{'beats' if summary.get('beats_copy_last_frame') else 'does not beat'} copy-last-frame on video."
    )


def pixel_targets(pixels: dict) -> dict[str, bool]:
    """Which of the demo's pixel targets hold (README, "The demo"): next frame within 1 dB of copy-last-frame
    and 6 dB above the mean colour; gray answers gray (saturation ≤ 0.08) and at least as close as the query;
    edge answers closer than both an all-black image and the query."""
    generated, base, targets = pixels["generated_psnr"], pixels["baseline_psnr"], {}
    if NEXT_FRAME in generated:
        targets["next_frame"] = (
            generated[NEXT_FRAME] >= base[NEXT_FRAME]["copy_last_frame"] - 1.0
            and generated[NEXT_FRAME] >= base[NEXT_FRAME]["mean_colour"] + 6.0
        )
    if "gray" in generated:
        targets["gray"] = pixels["gray_saturation"] <= 0.08 and generated["gray"] >= base["gray"]["copy_query"]
    if "edges" in generated:
        targets["edges"] = generated["edges"] > max(base["edges"]["black"], base["edges"]["copy_query"])
    return targets

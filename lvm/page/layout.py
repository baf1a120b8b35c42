"""The Gradio page: an "Analogy" tab and a "Video / sequence" tab sharing the sampling controls, each with
a demo run's prompts as examples; served on the loopback address by default."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from lvm.page.demo_runs import AnalogyPrompt, DemoPrompts
from lvm.page.prompter import VisualPrompter, _sampling
from lvm.page.uploads import UploadError, UploadLimits


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

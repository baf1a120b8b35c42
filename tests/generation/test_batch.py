"""Batch generation: prompt files and folders, outputs per prompt, batching that changes nothing, resuming,
and the `python -m lvm.generate` CLI."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from lvm.generation.batch import VisualPrompt, generate_for_prompts, load_prompt_frames, read_prompts
from lvm.generation.engine import GenerationEngine
from lvm.generation.prompting import analogy_prompting
from lvm.generation.sampler import SamplingConfig
from lvm.interop.pretrained import load_model
from lvm.media.images import load_image, tensor_to_uint8
from lvm.tokenizer.checkpoint import load_vqgan
from tests.cli import run_module_cli
from tests.original_video import read_frames_the_original_way, write_detailed_video

GREEDY = SamplingConfig(temperature=0)


def write_image(path: Path, seed: int, size=(40, 30)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def prompt_file(tmp_path) -> Path:
    """Three analogy prompts of 1, 2 and 3 example pairs (different lengths); the second has a target."""
    lines = []
    for i, pairs in enumerate((1, 2, 3)):
        inputs = [
            write_image(tmp_path / "images" / f"p{i}_{j}.png", seed=10 * i + j).name for j in range(2 * pairs + 1)
        ]
        line = {"id": f"prompt{i}", "input": [f"images/{name}" for name in inputs]}
        if i == 1:
            line["target"] = f"images/{write_image(tmp_path / 'images' / 'target1.png', seed=99).name}"
        lines.append(json.dumps(line))
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def lvm_and_vqgan(tiny_lvm_ckpt, vqgan_dir):
    return load_model(tiny_lvm_ckpt), load_vqgan(vqgan_dir)


def test_batched_greedy_outputs_equal_one_prompt_at_a_time(prompt_file, tmp_path, lvm_and_vqgan):
    model, vqgan = lvm_and_vqgan
    prompts = read_prompts(prompt_file)
    assert [p.id for p in prompts] == ["prompt0", "prompt1", "prompt2"] and prompts[1].target is not None
    out = tmp_path / "out"
    results = generate_for_prompts(
        GenerationEngine(model), vqgan, prompts, out, GREEDY, n_candidates=2, batch_size=2, resize_output="original"
    )
    assert [r["id"] for r in results] == ["prompt0", "prompt1", "prompt2"]
    assert [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()] == [
        "prompt0",
        "prompt1",
        "prompt2",
    ]
    for prompt, result in zip(prompts, results):
        frames = torch.stack([load_image(p, 32) for p in prompt.inputs])
        pairs = [(frames[2 * k], frames[2 * k + 1]) for k in range(len(frames) // 2)]
        alone = tensor_to_uint8(analogy_prompting(model, vqgan, pairs, frames[-1], GREEDY)[0])
        written = Image.open(out / result["candidates"][0])
        assert written.size == (40, 30)  # "original": back to the query's size
        expected = Image.fromarray(alone).resize((40, 30), Image.BICUBIC)
        # Same codes; the VQGAN decoder's convolutions round a little differently at another batch size.
        diff = np.abs(np.asarray(written).astype(int) - np.asarray(expected))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, prompt.id
        grid = Image.open(out / result["grid"])
        columns = len(prompt.inputs) + 1 + (prompt.target is not None)
        assert grid.size == (2 + columns * 34, 2 + 2 * 34)  # 32-px tiles, 2-px padding, one row per candidate


def test_resume_skips_finished_batches_and_regenerates_the_rest_identically(prompt_file, tmp_path, lvm_and_vqgan):
    model, vqgan = lvm_and_vqgan
    prompts, out = read_prompts(prompt_file), tmp_path / "out"
    run = lambda: generate_for_prompts(
        GenerationEngine(model),
        vqgan,
        prompts,
        out,
        SamplingConfig(temperature=1.0),
        n_candidates=2,
        batch_size=2,
        seed=5,
    )
    run()
    first = {p: (out / p).read_bytes() for p in ("prompt0/candidate_1.png", "prompt2/candidate_0.png")}
    finished_mtime = (out / "prompt0" / "result.json").stat().st_mtime_ns
    # As if killed while writing the second batch: prompt2 lost its result and a candidate.
    (out / "prompt2" / "result.json").unlink()
    (out / "prompt2" / "candidate_0.png").unlink()
    run()
    assert (out / "prompt0" / "result.json").stat().st_mtime_ns == finished_mtime  # batch 0 not redone
    assert {p: (out / p).read_bytes() for p in first} == first  # batch 1 redone exactly, by its own seed


def test_video_prompt_frames_are_the_originals_pixels(tmp_path):
    # Sequential prompting from a video file reads its frames as the original's generate_videos.py does.
    path = write_detailed_video(tmp_path / "clip.mp4", n_frames=7)
    frames, original = load_prompt_frames(VisualPrompt("v", (path,)), 40, max_frames=3, frame_stride=2)
    reference = read_frames_the_original_way(path, 40)
    assert original == (160, 120)
    np.testing.assert_array_equal(tensor_to_uint8(frames), np.stack([reference[i] for i in (2, 4, 6)]))


def test_video_and_frame_folder_prompts(tmp_path, lvm_and_vqgan):
    model, vqgan = lvm_and_vqgan
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(10):
            frame = np.full((32, 48, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames, original = load_prompt_frames(VisualPrompt("v", (video,)), 32, max_frames=3, frame_stride=2)
    assert frames.shape == (3, 3, 32, 32) and original == (48, 32)
    assert frames[-1].mean() > frames[0].mean()  # the last frames, in order (brightness rises)
    assert abs(float(frames[-1].mean()) - 180 / 255) < 0.03  # ending on the video's last frame (9 · 20)
    folder = tmp_path / "prompts" / "clip"
    for i in range(4):
        write_image(folder / f"frame_{i}.png", seed=i)
    write_image(folder / "target.png", seed=9)
    (prompt,) = read_prompts(tmp_path / "prompts")
    assert [p.name for p in prompt.inputs] == [
        f"frame_{i}.png" for i in range(4)
    ] and prompt.target.name == "target.png"
    results = generate_for_prompts(
        GenerationEngine(model),
        vqgan,
        [prompt, VisualPrompt("video", (video,))],
        tmp_path / "out",
        GREEDY,
        n_new_frames=3,
        max_context_frames=4,
    )
    assert results[1]["frames"][0] == ["video/candidate_0.png"] + [f"video/candidate_0_frame_{f}.png" for f in (1, 2)]
    assert Image.open(tmp_path / "out" / "video" / "candidate_0_frame_2.png").size == (32, 32)


def test_bad_prompt_files_name_the_line_and_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"input": ["a.png"]}\n{"inputs": ["b.png"]}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: no field 'input'"):
        read_prompts(path)
    path.write_text('{"id": "x", "input": ["a.png"]}\n{"id": "x", "input": ["b.png"]}\n')
    with pytest.raises(ValueError, match="prompt id 'x' appears twice"):
        read_prompts(path)
    path.write_text('{"input": []}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:1: field .input. must be a non-empty list"):
        read_prompts(path)


def test_generate_cli_writes_an_analogy_and_refuses_two_prompt_kinds(tmp_path, tiny_lvm_ckpt, vqgan_dir):
    images = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    common = [f"model_path={tiny_lvm_ckpt}", f"tokenizer_path={vqgan_dir}", f"out_dir={tmp_path / 'out'}"]
    run_module_cli(
        "lvm.generate",
        *common,
        f"examples=[[{images[0]},{images[1]}]]",
        f"query={images[2]}",
        "n_candidates=3",
        cwd=tmp_path,
    )
    result = json.loads((tmp_path / "out" / "analogy" / "result.json").read_text())
    assert len(result["candidates"]) == 3
    assert all(Image.open(tmp_path / "out" / c).size == (32, 32) for c in result["candidates"])
    with pytest.raises(AssertionError, match="set exactly one of prompts=, frames= or examples="):
        run_module_cli(
            "lvm.generate",
            *common,
            f"frames={tmp_path}",
            f"query={images[2]}",
            f"examples=[[{images[0]},{images[1]}]]",
            cwd=tmp_path,
        )


def test_generate_cli_runs_int8_and_names_a_bad_mode(tmp_path, tiny_lvm_ckpt, vqgan_dir):
    images = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    common = [f"model_path={tiny_lvm_ckpt}", f"tokenizer_path={vqgan_dir}", f"out_dir={tmp_path / 'out'}",
              f"examples=[[{images[0]},{images[1]}]]", f"query={images[2]}"]  # fmt: skip
    run_module_cli("lvm.generate", *common, "quantize=int8", "n_candidates=2", cwd=tmp_path)
    result = json.loads((tmp_path / "out" / "analogy" / "result.json").read_text())
    assert len(result["candidates"]) == 2
    assert all(Image.open(tmp_path / "out" / c).size == (32, 32) for c in result["candidates"])
    with pytest.raises(AssertionError, match=r"error: quantize: 'int4' is not one of \[None, 'int8'\]"):
        run_module_cli("lvm.generate", *common, "quantize=int4", cwd=tmp_path)

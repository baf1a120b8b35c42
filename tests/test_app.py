"""`python -m lvm.app`: the page served from conf/app.yaml on a free port and driven with gradio_client,
as a remote user would. Candidates are exactly `lvm.generation.prompting` run alone with seed + i, they
stream in one at a time, oversized and non-image uploads are refused with messages naming the file and
the limit, and the server listens on loopback only. Served on a demo run (`demo_run=`, by default the
newest finished one), the page loads the run's model and offers its prompts.json as examples that fill
the inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from hydra import compose, initialize_config_dir
from PIL import Image

from lvm.app import serve
from lvm.generation.prompting import analogy_prompting, sequential_prompting
from lvm.generation.sampler import SamplingConfig
from lvm.interop.pretrained import load_model
from lvm.media.images import load_image, tensor_to_uint8
from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA
from lvm.page.demo_runs import DemoRunError, PageSources, resolve_page_sources
from lvm.page.uploads import UploadError, UploadLimits, read_upload_image, read_upload_video
from lvm.tokenizer import load_vqgan
from lvm.tokenizer.grid import image_grid
from tests.original_video import read_frames_the_original_way, write_detailed_video

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # px, the tiny VQGAN's resolution: 8×8 = 64 codes per image
MAX_UPLOAD_MB = 0.02  # 20 971 bytes
MAX_PIXELS = 128 * 128
EMPTY_PAIRS = (None,) * 4  # example rows 2 and 3 of the page's 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save_image(path: Path, side: int, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def save_video(path: Path, n_frames: int) -> Path:
    """A small MPEG-4 clip of a square drifting right."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            pixels = np.zeros((64, 64, 3), dtype=np.uint8)
            pixels[20:40, 4 + 6 * i : 24 + 6 * i] = (250, 200, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def read_png(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def save_tiny_lvm(path: Path, n_images: int) -> Path:
    """A tiny random LVM whose context holds `n_images` images of the tiny VQGAN, saved as our .ckpt."""
    torch.manual_seed(0)
    config = ModelConfig(
        hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=72, max_seq_len=n_images * 64
    )
    model = LLaMA(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{name}": tensor for name, tensor in model.state_dict().items()},
            "hyper_parameters": {"model_config": config.to_dict()},
        },
        path,
    )
    return path


def write_demo_run(run_dir: Path, vqgan_dir: Path | None = None, finished: bool = True) -> Path:
    """A run folder as `python -m lvm.demo` writes it: lvm/checkpoints/last.ckpt (a tiny LVM holding 8
    images), tokenizer/ (a copy of `vqgan_dir`; placeholders when None), prompts.json with its PNGs at the
    VQGAN's resolution (analogies of 3 pairs: 2 "gray", 1 "edges"; one 7-frame next-frame prompt) and,
    when `finished`, summary.json."""
    if vqgan_dir is None:
        (run_dir / "tokenizer").mkdir(parents=True)
        (run_dir / "lvm" / "checkpoints").mkdir(parents=True)
        (run_dir / "lvm" / "checkpoints" / "last.ckpt").touch()
    else:
        save_tiny_lvm(run_dir / "lvm" / "checkpoints" / "last.ckpt", n_images=8)
        shutil.copytree(vqgan_dir, run_dir / "tokenizer")

    def image(name: str, seed: int) -> str:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        save_image(run_dir / name, SIZE, seed)
        return name

    analogy = []
    for i, task in enumerate(("gray", "gray", "edges")):
        folder = f"prompts/{task}_{i:02d}"
        analogy.append(
            {
                "task": task,
                "examples": [
                    [image(f"{folder}/x_{j}.png", 100 * i + 2 * j), image(f"{folder}/y_{j}.png", 100 * i + 2 * j + 1)]
                    for j in range(3)
                ],
                "query": image(f"{folder}/query.png", 100 * i + 50),
                "target": image(f"{folder}/target.png", 100 * i + 51),
            }
        )
    frames = [image(f"prompts/next_frame_00/frame_{j:02d}.png", 500 + j) for j in range(7)]
    prompts = {
        "version": 1,
        "next_frame": [{"frames": frames, "target": image("prompts/next_frame_00/target.png", 9)}],
        "analogy": analogy,
    }
    (run_dir / "prompts.json").write_text(json.dumps(prompts))
    if finished:
        (run_dir / "summary.json").write_text("{}")
    return run_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory, vqgan_dir) -> dict:
    """A tiny LVM saved as one of our .ckpt files, upload files, and the page served from conf/app.yaml."""
    root = tmp_path_factory.mktemp("app")
    save_tiny_lvm(root / "lvm.ckpt", n_images=6)  # 6 images: analogies of up to 2 pairs
    files = {name: save_image(root / f"{name}.png", 40, seed) for seed, name in enumerate(("x1", "y1", "query"))}
    files["frames"] = [save_image(root / f"frame_{i}.png", 48, 10 + i) for i in (10, 2, 1)]  # named out of order
    files["video"] = save_video(root / "clip.mp4", 6)
    files["noise"] = save_image(root / "noise.png", 100, 20)  # ~30 kB: over the size limit, not the pixel one
    files["wide"] = root / "wide.png"  # 40 000 px: over the pixel limit, ~1 kB
    Image.new("RGB", (200, 200), (30, 60, 90)).save(files["wide"])
    files["fake"] = root / "photo.png"  # an image's name, a text's content
    files["fake"].write_text("not a picture")
    files["fake_video"] = root / "movie.mp4"
    files["fake_video"].write_text("not a video")
    files["text"] = root / "notes.txt"
    files["text"].write_text("not a picture")

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "app",
            overrides=[
                f"model_path={root / 'lvm.ckpt'}",
                f"tokenizer_path={vqgan_dir}",
                f"server_port={free_port()}",
                f"limits.max_upload_mb={MAX_UPLOAD_MB}",
                f"limits.max_pixels={MAX_PIXELS}",
            ],
        )
    app = serve(cfg, prevent_thread_lock=True)
    try:
        yield {
            "app": app,
            "cfg": cfg,
            "client": Client(app.local_url, verbose=False),
            "files": files,
            "model": load_model(root / "lvm.ckpt"),
            "vqgan": load_vqgan(vqgan_dir),
        }
    finally:
        app.close()


def analogy_args(x, y, query, n_candidates: int = 2, seed: int = 5, temperature: float = 1.0, top_k: int = 0):
    files = [None if f is None else handle_file(str(f)) for f in (x, y, *EMPTY_PAIRS, query)]
    return (*files, temperature, top_k, 1.0, n_candidates, seed)


def gallery(paths) -> list[dict]:
    """Files as the frames gallery's input: (image, caption) items."""
    return [{"image": handle_file(str(path)), "caption": None} for path in paths]


def test_server_listens_on_loopback_only(world):
    app, port = world["app"], world["cfg"].server_port
    assert world["cfg"].server_name == "127.0.0.1"  # conf/app.yaml's default, not overridden above
    assert app.server_name == "127.0.0.1" and app.local_url == f"http://127.0.0.1:{port}/"
    assert app.max_file_size == int(MAX_UPLOAD_MB * 1024**2)  # Gradio's own upload limit is set too
    if sys.platform.startswith("linux"):  # all of 127/8 is loopback: a 0.0.0.0 listener would answer here
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.settimeout(2)
            probe.connect(("127.0.0.2", port))


def test_analogy_candidates_are_prompting_alone_with_seed_plus_i(world):
    files, model, vqgan = world["files"], world["model"], world["vqgan"]
    prompt, candidates = world["client"].predict(
        *analogy_args(files["x1"], files["y1"], files["query"]), api_name="/analogy"
    )
    assert [item["caption"] for item in prompt] == ["x1", "y1", "query"]
    assert [item["caption"] for item in candidates] == ["candidate 1 · seed 5", "candidate 2 · seed 6"]
    examples = [(load_image(files["x1"], SIZE), load_image(files["y1"], SIZE))]
    query = load_image(files["query"], SIZE)
    assert np.array_equal(read_png(prompt[2]["image"]), tensor_to_uint8(query))  # read as the original reads
    for i, item in enumerate(candidates):
        picture = read_png(item["image"])
        assert picture.shape == (SIZE, SIZE, 3)
        alone = analogy_prompting(
            model, vqgan, examples, query, SamplingConfig(), 1, torch.Generator().manual_seed(5 + i)
        )[0]
        assert np.array_equal(picture, tensor_to_uint8(alone)), f"candidate {i + 1}"


def test_analogy_keeps_the_last_pairs_that_fit(world):
    files = world["files"]
    pairs = [handle_file(str(files[name])) for name in ("x1", "y1", "y1", "x1", "query", "y1")]
    prompt, candidates = world["client"].predict(
        *pairs, handle_file(str(files["query"])), 0.0, 0, 1.0, 1, 0, api_name="/analogy"
    )
    # 3 pairs + query + answer need 8 images; the model's context holds 6: 2 pairs, the earliest dropped
    assert [item["caption"] for item in prompt] == ["x2", "y2", "x3", "y3", "query"]
    assert len(candidates) == 1


def test_candidates_stream_in_one_at_a_time(world):
    files = world["files"]
    job = world["client"].submit(
        *analogy_args(files["x1"], files["y1"], files["query"], n_candidates=3, temperature=0.0), api_name="/analogy"
    )
    job.result(timeout=60)
    # Under CPU load gradio_client has been seen to record a streamed update whose file download failed
    # (h11 "declared Content-Length" errors) as a lone value; the counts of the complete updates must still
    # run 0, 1, 2, 3 in order, and the last update must hold all three candidates.
    counts = [len(output[1]) for output in job.outputs() if isinstance(output, (tuple, list)) and len(output) == 2]
    assert counts == sorted(counts) and counts[-1] == 3 and set(counts) <= {0, 1, 2, 3} and len(counts) >= 3


def test_frames_and_video_continue(world):
    files, model, vqgan, client = world["files"], world["model"], world["vqgan"], world["client"]
    sampling = (1.0, 0, 1.0, 1, 3)  # temperature, top-k, top-p, one candidate, seed 3
    prompt, candidates = client.predict(None, gallery(files["frames"]), 2, 5, 1, *sampling, api_name="/continue_video")
    # 5 context frames asked (all that fit beside a new one in the model's 6 images); 3 uploaded, in name order
    assert [item["caption"] for item in prompt] == ["frame_1.png", "frame_2.png", "frame_10.png"]
    context = torch.stack([load_image(f, SIZE) for f in sorted(files["frames"], key=lambda p: int(p.stem[6:]))])
    new = sequential_prompting(model, vqgan, context, 2, SamplingConfig(), 1, torch.Generator().manual_seed(3))[0]
    assert np.array_equal(read_png(candidates[0]["image"]), image_grid(new, columns=2))  # a strip of 2 frames

    prompt, candidates = client.predict(
        handle_file(str(files["video"])), None, 1, 3, 2, *sampling, api_name="/continue_video"
    )
    assert [item["caption"] for item in prompt] == ["frame 2 of 6", "frame 4 of 6", "frame 6 of 6"]
    assert read_png(candidates[0]["image"]).shape == (SIZE + 4, SIZE + 4, 3)  # one frame, 2 px border


def test_non_images_are_refused_naming_the_file(world):
    files, client = world["files"], world["client"]
    with pytest.raises(AppError, match=r"photo\.png: not an image"):  # our check: the content
        client.predict(*analogy_args(files["fake"], files["y1"], files["query"]), api_name="/analogy")
    # The image fields pass files PIL refuses on to our check, whatever their name says.
    with pytest.raises(AppError, match=r"notes\.txt: not an image"):
        client.predict(*analogy_args(files["text"], files["y1"], files["query"]), api_name="/analogy")
    with pytest.raises(AppError, match=r"Invalid file type.*image"):  # Gradio's, in the frames: the name's type
        client.predict(None, gallery([files["text"]]), 1, 3, 1, 1.0, 0, 1.0, 1, 0, api_name="/continue_video")
    with pytest.raises(AppError, match=r"photo\.png: not an image"):
        client.predict(None, gallery([files["fake"]]), 1, 3, 1, 1.0, 0, 1.0, 1, 0, api_name="/continue_video")
    with pytest.raises(AppError, match=r"movie\.mp4: not a video PyAV can open"):
        client.predict(
            handle_file(str(files["fake_video"])), None, 1, 3, 1, 1.0, 0, 1.0, 1, 0, api_name="/continue_video"
        )
    with pytest.raises(AppError, match=r"example 1: upload both x and y \(only x given\)"):
        client.predict(*analogy_args(files["x1"], None, files["query"]), api_name="/analogy")


def test_oversized_uploads_are_refused_naming_the_limit(world):
    files, client = world["files"], world["client"]
    with pytest.raises(AppError, match=r"wide\.png: 200×200 = 40,000 pixels is over the limit of 16,384 pixels"):
        client.predict(*analogy_args(files["x1"], files["y1"], files["wide"]), api_name="/analogy")
    # Over max_upload_mb: gradio_client refuses before sending, and the server refuses the upload itself.
    with pytest.raises(ValueError, match=r"noise\.png exceeds the maximum file size of 20971 bytes"):
        client.predict(*analogy_args(files["noise"], files["y1"], files["query"]), api_name="/analogy")
    with open(files["noise"], "rb") as stream:
        response = httpx.post(f"{world['app'].local_url}gradio_api/upload", files={"files": stream})
    assert response.status_code == 413 and "maximum allowed size of 20971 bytes" in response.text
    # The handlers' own check, for files that reach them another way.
    with pytest.raises(UploadError, match=r"noise\.png: 0\.0\d+ MB is over the upload limit of 0\.02 MB"):
        read_upload_image(files["noise"], SIZE, UploadLimits(max_upload_mb=MAX_UPLOAD_MB))


def test_an_uploaded_video_is_read_as_the_original_reads_videos(tmp_path):
    path = write_detailed_video(tmp_path / "upload.mp4", n_frames=4)
    frames = read_upload_video(path, 24, UploadLimits())
    np.testing.assert_array_equal(np.stack(frames), np.stack(read_frames_the_original_way(path, 24)))


# A demo run: the page's model, tokenizer and examples.


def test_latest_demo_run_is_the_newest_finished_one(tmp_path):
    runs = tmp_path / "runs"
    older = write_demo_run(runs / "2026-01-01_00-00-00")
    newest = write_demo_run(runs / "2026-01-03_00-00-00")
    write_demo_run(runs / "2026-01-04_00-00-00", finished=False)  # still running (no summary.json): skipped
    os.utime(older / "summary.json", (1e9, 1e9))
    os.utime(newest / "summary.json", (2e9, 2e9))
    sources = resolve_page_sources("latest", runs)
    assert sources.run_dir == newest
    assert sources.model_path == newest / "lvm" / "checkpoints" / "last.ckpt"
    assert sources.tokenizer_path == newest / "tokenizer"
    analogy, next_frame = sources.prompts.analogy, sources.prompts.next_frame
    assert [prompt.task for prompt in analogy] == ["gray", "gray", "edges"]
    assert analogy[0].pairs[1] == (newest / "prompts/gray_00/x_1.png", newest / "prompts/gray_00/y_1.png")
    assert len(analogy[2].pairs) == 3 and analogy[2].query == newest / "prompts/edges_02/query.png"
    assert next_frame == ((*(newest / f"prompts/next_frame_00/frame_{j:02d}.png" for j in range(7)),),)


def test_given_paths_win_over_the_demo_run(tmp_path):
    runs = tmp_path / "runs"
    run = write_demo_run(runs / "2026-01-01_00-00-00")
    sources = resolve_page_sources(str(run), runs, model_path="other.ckpt")
    assert (sources.model_path, sources.tokenizer_path, sources.run_dir) == (Path("other.ckpt"), run / "tokenizer", run)
    assert len(sources.prompts.analogy) == 3  # a named run still gives its examples
    # Both paths given: "latest" is not looked for (they name another model), and none is needed.
    assert resolve_page_sources("latest", runs, "m.ckpt", "vq") == PageSources(Path("m.ckpt"), Path("vq"))
    assert resolve_page_sources("latest", tmp_path / "nothing", "m.ckpt", "vq").run_dir is None
    assert resolve_page_sources(None, runs, "m.ckpt", "vq").prompts.analogy == ()


def test_missing_demo_runs_are_errors_saying_what_to_do(tmp_path):
    runs = tmp_path / "demo" / "runs"
    write_demo_run(runs / "2026-01-01_00-00-00", finished=False)
    hint = re.escape("run `python -m lvm.demo` first or pass model_path=... tokenizer_path=...")
    with pytest.raises(DemoRunError, match=rf"^no finished demo run in {re.escape(str(runs))} .*{hint}$"):
        resolve_page_sources("latest", runs, model_path="m.ckpt")
    with pytest.raises(DemoRunError, match=r"^demo_run=null: pass model_path=\.\.\. tokenizer_path="):
        resolve_page_sources(None, runs, tokenizer_path="vq")
    with pytest.raises(DemoRunError, match=r"^demo_run=.*elsewhere: no such folder"):
        resolve_page_sources(tmp_path / "elsewhere", runs)
    unfinished = runs / "2026-01-01_00-00-00"
    (unfinished / "lvm" / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(DemoRunError, match=r"last\.ckpt: not found in demo run .*pass model_path=\.\.\."):
        resolve_page_sources(unfinished, runs)
    # The command says it in one line and exits with status 1 (not Hydra's traceback).
    done = subprocess.run(
        [sys.executable, "-m", "lvm.app", f"paths.log_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert re.fullmatch(
        rf"error: no finished demo run in {re.escape(str(runs))} .*{hint}", done.stderr.strip().splitlines()[-1]
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda data: data.pop("analogy"), r"field 'analogy' is missing"),
        (lambda data: data.update(version=2), r"field 'version' should be 1, got 2"),
        (lambda data: data["analogy"][0].update(task=""), r"field 'analogy\[0\]\.task' should be a non-empty str"),
        (
            lambda data: data["analogy"][1]["examples"][2].pop(),
            r"field 'analogy\[1\]\.examples\[2\]' should be an \[x, y\] pair of paths",
        ),
        (
            lambda data: data["analogy"][2].update(query="prompts/gone.png"),
            r"field 'analogy\[2\]\.query' names .*gone\.png, which does not exist",
        ),
        (
            lambda data: data["next_frame"][0].update(frames="clip.mp4"),
            r"field 'next_frame\[0\]\.frames' should be a list, got \"clip\.mp4\"",
        ),
    ],
)
def test_malformed_prompts_json_is_an_error_naming_the_file_and_field(tmp_path, edit, message):
    run = write_demo_run(tmp_path / "run")
    data = json.loads((run / "prompts.json").read_text())
    edit(data)
    (run / "prompts.json").write_text(json.dumps(data))
    with pytest.raises(DemoRunError, match=rf"^{re.escape(str(run / 'prompts.json'))}: {message}"):
        resolve_page_sources(run, tmp_path)


def test_a_run_without_valid_prompts_json_is_an_error_naming_it(tmp_path):
    run = write_demo_run(tmp_path / "run")
    (run / "prompts.json").write_text("{not json")
    with pytest.raises(DemoRunError, match=r"prompts\.json: not valid JSON"):
        resolve_page_sources(run, tmp_path)
    (run / "prompts.json").unlink()
    with pytest.raises(DemoRunError, match=rf"^{re.escape(str(run / 'prompts.json'))}: not found"):
        resolve_page_sources("latest", tmp_path)  # the newest finished run under tmp_path is `run`


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory, vqgan_dir) -> dict:
    """A finished demo run, and the page served from conf/app.yaml with only demo_run= (and a free port)."""
    run = write_demo_run(tmp_path_factory.mktemp("demo") / "2026-01-01_00-00-00", vqgan_dir)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("app", overrides=[f"demo_run={run}", f"server_port={free_port()}"])
    app = serve(cfg, prevent_thread_lock=True)
    try:
        yield {
            "app": app,
            "run": run,
            "client": Client(app.local_url, verbose=False),
            "model": load_model(run / "lvm" / "checkpoints" / "last.ckpt"),
            "vqgan": load_vqgan(run / "tokenizer"),
        }
    finally:
        app.close()


def test_demo_run_prompts_are_listed_as_examples(demo_page):
    config = httpx.get(f"{demo_page['app'].local_url}config").json()
    datasets = {c["props"]["label"]: c["props"]["samples"] for c in config["components"] if c["type"] == "dataset"}
    assert {label: len(samples) for label, samples in datasets.items()} == {
        "Examples: gray": 2,
        "Examples: edges": 1,
        "Examples: held-out videos (next frame)": 1,
    }
    assert [item["orig_name"] for item in datasets["Examples: edges"][0]] == [
        "x_0.png",
        "y_0.png",
        "x_1.png",
        "y_1.png",
        "x_2.png",
        "y_2.png",
        "query.png",
    ]
    frames = datasets["Examples: held-out videos (next frame)"][0][0]
    assert [item["image"]["orig_name"] for item in frames] == [f"frame_{j:02d}.png" for j in range(7)]
    # The inputs show their images; their settings reach the page (Gradio reads them back through __init__).
    fields = [c["props"] for c in config["components"] if c["type"] == "image"]
    assert [field["label"] for field in fields] == ["x1", "y1", "x2", "y2", "x3", "y3", "query x"]
    assert all(
        field["type"] == "filepath" and field["sources"] == ["upload", "clipboard"] and field["height"] == 160
        for field in fields
    )


def test_an_analogy_example_fills_the_inputs_and_runs_as_prompting_alone(demo_page):
    client, run = demo_page["client"], demo_page["run"]
    filled = client.predict(1, api_name="/analogy_example_gray")  # a click on the second "gray" example
    assert [update["label"] for update in filled] == ["x1", "y1", "x2", "y2", "x3", "y3", "query x"]
    folder = run / "prompts" / "gray_01"
    originals = [folder / f"{xy}_{j}.png" for j in range(3) for xy in "xy"] + [folder / "query.png"]
    for update, original in zip(filled, originals):
        assert np.array_equal(read_png(update["value"]), read_png(str(original))), original.name
    prompt, candidates = client.predict(
        *(handle_file(update["value"]) for update in filled), 1.0, 0, 1.0, 1, 7, api_name="/analogy"
    )
    assert [item["caption"] for item in prompt] == ["x1", "y1", "x2", "y2", "x3", "y3", "query"]
    images = [load_image(path, SIZE) for path in originals]
    alone = analogy_prompting(
        demo_page["model"],
        demo_page["vqgan"],
        list(zip(images[0:6:2], images[1:6:2])),
        images[6],
        SamplingConfig(),
        1,
        torch.Generator().manual_seed(7),
    )[0]
    assert np.array_equal(read_png(candidates[0]["image"]), tensor_to_uint8(alone))


def test_a_video_example_fills_the_frames_and_continues_them(demo_page):
    client, run = demo_page["client"], demo_page["run"]
    filled = client.predict(0, api_name="/video_example")
    frames = [item["image"] for item in filled["value"]]
    assert [Path(frame).name for frame in frames] == [f"frame_{j:02d}.png" for j in range(7)]
    prompt, candidates = client.predict(None, gallery(frames), 1, 7, 1, 1.0, 0, 1.0, 1, 3, api_name="/continue_video")
    assert [item["caption"] for item in prompt] == [f"frame_{j:02d}.png" for j in range(7)]
    folder = run / "prompts" / "next_frame_00"
    context = torch.stack([load_image(folder / f"frame_{j:02d}.png", SIZE) for j in range(7)])
    new = sequential_prompting(
        demo_page["model"], demo_page["vqgan"], context, 1, SamplingConfig(), 1, torch.Generator().manual_seed(3)
    )[0]
    assert np.array_equal(read_png(candidates[0]["image"]), image_grid(new, columns=1))


def test_the_page_serves_an_int8_model(tmp_path, vqgan_dir):
    run = write_demo_run(tmp_path / "2026-01-02_00-00-00", vqgan_dir)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("app", overrides=[f"demo_run={run}", f"server_port={free_port()}", "quantize=int8"])
    app = serve(cfg, prevent_thread_lock=True)
    try:
        pictures = sorted((run / "prompts").rglob("*.png"))[:3]
        prompt, candidates = Client(app.local_url, verbose=False).predict(
            *analogy_args(*pictures, n_candidates=1, temperature=0.0), api_name="/analogy"
        )
        assert len(candidates) == 1 and [item["caption"] for item in prompt] == ["x1", "y1", "query"]
    finally:
        app.close()

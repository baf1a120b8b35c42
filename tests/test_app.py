"""`python -m lvm.app`: the page served from conf/app.yaml on a free port and driven with gradio_client,
as a remote user would. Candidates are exactly `lvm.generation.prompting` run alone with seed + i, they
stream in one at a time, oversized and non-image uploads are refused with messages naming the file and
the limit, and the server listens on loopback only."""

from __future__ import annotations

import socket
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

from lvm.app import UploadError, UploadLimits, read_upload_image, serve
from lvm.generation.prompting import analogy_prompting, sequential_prompting
from lvm.generation.sampler import SamplingConfig
from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA
from lvm.model.pretrained import load_model
from lvm.tokenizer import load_vqgan
from lvm.tokenizer.grid import image_grid
from lvm.tokenizer.preprocess import load_image, tensor_to_uint8

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32            # px, the tiny VQGAN's resolution: 8×8 = 64 codes per image
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
            pixels[20:40, 4 + 6 * i:24 + 6 * i] = (250, 200, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def read_png(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, vqgan_dir) -> dict:
    """A tiny LVM saved as one of our .ckpt files, upload files, and the page served from conf/app.yaml."""
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=72,
                         max_seq_len=6 * 64)  # 6 images: analogies of up to 2 pairs
    model = LLaMA(config)
    torch.save({"state_dict": {f"model.{name}": tensor for name, tensor in model.state_dict().items()},
                "hyper_parameters": {"model_config": config.to_dict()}}, root / "lvm.ckpt")
    files = {name: save_image(root / f"{name}.png", 40, seed) for seed, name in enumerate(("x1", "y1", "query"))}
    files["frames"] = [save_image(root / f"frame_{i}.png", 48, 10 + i) for i in (10, 2, 1)]  # named out of order
    files["video"] = save_video(root / "clip.mp4", 6)
    files["noise"] = save_image(root / "noise.png", 100, 20)      # ~30 kB: over the size limit, not the pixel one
    files["wide"] = root / "wide.png"                           # 40 000 px: over the pixel limit, ~1 kB
    Image.new("RGB", (200, 200), (30, 60, 90)).save(files["wide"])
    files["fake"] = root / "photo.png"                          # an image's name, a text's content
    files["fake"].write_text("not a picture")
    files["fake_video"] = root / "movie.mp4"
    files["fake_video"].write_text("not a video")
    files["text"] = root / "notes.txt"
    files["text"].write_text("not a picture")

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("app", overrides=[f"model_path={root / 'lvm.ckpt'}", f"tokenizer_path={vqgan_dir}",
                                        f"server_port={free_port()}", f"limits.max_upload_mb={MAX_UPLOAD_MB}",
                                        f"limits.max_pixels={MAX_PIXELS}"])
    app = serve(cfg, prevent_thread_lock=True)
    try:
        yield {"app": app, "cfg": cfg, "client": Client(app.local_url, verbose=False), "files": files,
               "model": load_model(root / "lvm.ckpt"), "vqgan": load_vqgan(vqgan_dir)}
    finally:
        app.close()


def analogy_args(x, y, query, n_candidates: int = 2, seed: int = 5, temperature: float = 1.0, top_k: int = 0):
    files = [None if f is None else handle_file(str(f)) for f in (x, y, *EMPTY_PAIRS, query)]
    return (*files, temperature, top_k, 1.0, n_candidates, seed)


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
    prompt, candidates = world["client"].predict(*analogy_args(files["x1"], files["y1"], files["query"]),
                                                 api_name="/analogy")
    assert [item["caption"] for item in prompt] == ["x1", "y1", "query"]
    assert [item["caption"] for item in candidates] == ["candidate 1 · seed 5", "candidate 2 · seed 6"]
    examples = [(load_image(files["x1"], SIZE), load_image(files["y1"], SIZE))]
    query = load_image(files["query"], SIZE)
    assert np.array_equal(read_png(prompt[2]["image"]), tensor_to_uint8(query))  # read as the original reads
    for i, item in enumerate(candidates):
        picture = read_png(item["image"])
        assert picture.shape == (SIZE, SIZE, 3)
        alone = analogy_prompting(model, vqgan, examples, query, SamplingConfig(), 1,
                                  torch.Generator().manual_seed(5 + i))[0]
        assert np.array_equal(picture, tensor_to_uint8(alone)), f"candidate {i + 1}"


def test_analogy_keeps_the_last_pairs_that_fit(world):
    files = world["files"]
    pairs = [handle_file(str(files[name])) for name in ("x1", "y1", "y1", "x1", "query", "y1")]
    prompt, candidates = world["client"].predict(*pairs, handle_file(str(files["query"])), 0.0, 0, 1.0, 1, 0,
                                                 api_name="/analogy")
    # 3 pairs + query + answer need 8 images; the model's context holds 6: 2 pairs, the earliest dropped
    assert [item["caption"] for item in prompt] == ["x2", "y2", "x3", "y3", "query"]
    assert len(candidates) == 1


def test_candidates_stream_in_one_at_a_time(world):
    files = world["files"]
    job = world["client"].submit(*analogy_args(files["x1"], files["y1"], files["query"], n_candidates=3,
                                               temperature=0.0), api_name="/analogy")
    job.result(timeout=60)
    assert [len(candidates) for _, candidates in job.outputs()] == [0, 1, 2, 3]


def test_frames_and_video_continue(world):
    files, model, vqgan, client = world["files"], world["model"], world["vqgan"], world["client"]
    sampling = (1.0, 0, 1.0, 1, 3)  # temperature, top-k, top-p, one candidate, seed 3
    prompt, candidates = client.predict(None, [handle_file(str(f)) for f in files["frames"]], 2, 5, 1,
                                        *sampling, api_name="/continue_video")
    # 5 context frames asked (all that fit beside a new one in the model's 6 images); 3 uploaded, in name order
    assert [item["caption"] for item in prompt] == ["frame_1.png", "frame_2.png", "frame_10.png"]
    context = torch.stack([load_image(f, SIZE) for f in sorted(files["frames"], key=lambda p: int(p.stem[6:]))])
    new = sequential_prompting(model, vqgan, context, 2, SamplingConfig(), 1, torch.Generator().manual_seed(3))[0]
    assert np.array_equal(read_png(candidates[0]["image"]), image_grid(new, columns=2))  # a strip of 2 frames

    prompt, candidates = client.predict(handle_file(str(files["video"])), None, 1, 3, 2, *sampling,
                                        api_name="/continue_video")
    assert [item["caption"] for item in prompt] == ["frame 2 of 6", "frame 4 of 6", "frame 6 of 6"]
    assert read_png(candidates[0]["image"]).shape == (SIZE + 4, SIZE + 4, 3)  # one frame, 2 px border


def test_non_images_are_refused_naming_the_file(world):
    files, client = world["files"], world["client"]
    with pytest.raises(AppError, match=r"photo\.png: not an image"):  # our check: the content
        client.predict(*analogy_args(files["fake"], files["y1"], files["query"]), api_name="/analogy")
    with pytest.raises(AppError, match=r"Invalid file type.*image"):  # Gradio's: the name's type
        client.predict(*analogy_args(files["text"], files["y1"], files["query"]), api_name="/analogy")
    with pytest.raises(AppError, match=r"movie\.mp4: not a video PyAV can open"):
        client.predict(handle_file(str(files["fake_video"])), None, 1, 3, 1, 1.0, 0, 1.0, 1, 0,
                       api_name="/continue_video")
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

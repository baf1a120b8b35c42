"""`python -m lvm.tokenize`: files → shards with the plain encoder's codes, skips, resume, 2 processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from skimage import data as skdata

from data_pipelines.synthetic import write_video_file
from lvm.data.manifest import read_manifest
from lvm.data.shards import read_sentences
from lvm.media.skips import BadInputError
from lvm.tokenize import tokenize
from lvm.tokenizer import load_image, load_vqgan
from lvm.tokenizer.files_to_shards import list_inputs, plan_shards
from tests.original_video import read_frames_the_original_way

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Seven scikit-image photographs (PNG and JPEG, sizes and aspect ratios differ, one in a
    sub-folder), one H.264/MPEG-4 video of 6 frames and one corrupt JPEG."""
    root = tmp_path_factory.mktemp("media")
    (root / "sub").mkdir()
    photos = {
        "astronaut": skdata.astronaut(),
        "coffee": skdata.coffee(),
        "chelsea": skdata.chelsea(),
        "rocket": skdata.rocket(),
        "camera": skdata.camera(),
        "hubble": skdata.hubble_deep_field(),
        "retina": skdata.retina(),
    }
    for i, (name, pixels) in enumerate(photos.items()):
        image = Image.fromarray(pixels).reduce(4)
        folder = root / "sub" if i == 3 else root
        image.save(folder / (f"{name}.jpg" if i % 2 else f"{name}.png"), quality=95)
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(128 + 10 * t, 40, (48, 64, 3)), 0, 255).astype(np.uint8) for t in range(6)]
    write_video_file(root / "clip.mp4", frames)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def tokenize_cfg(out_dir: Path, inputs, tokenizer_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "tokenize",
            overrides=[
                f"inputs=[{','.join(map(str, inputs))}]",
                f"output_dir={out_dir}",
                f"tokenizer_path={tokenizer_path}",
                "files_per_shard=3",
                "batch_size=4",
                "num_workers=0",
                "progress=false",
                *overrides,
            ],
        )


def plain_codes(vqgan_dir: Path, images: torch.Tensor) -> np.ndarray:
    """What the model gives run plainly: fp32, NCHW, no_grad, one image at a time."""
    model = load_vqgan(vqgan_dir).eval()
    with torch.no_grad():
        return np.concatenate([model.get_code(image[None]).numpy().reshape(-1) for image in images])


def test_list_inputs_takes_folders_globs_and_file_lists(media, tmp_path):
    listed = list_inputs([str(media)])
    assert len(listed) == 9 and listed == sorted(listed)
    assert any(p.endswith("sub/rocket.jpg") for p in listed) and any(p.endswith("clip.mp4") for p in listed)
    file_list = tmp_path / "files.txt"
    file_list.write_text(f"# two of them\n{os.path.relpath(media / 'astronaut.png', tmp_path)}\n{media / 'clip.mp4'}\n")
    assert list_inputs([str(file_list)]) == [str(media / "astronaut.png"), str(media / "clip.mp4")]
    assert list_inputs([f"{media}/*.png"]) == sorted(str(p) for p in media.glob("*.png"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_inputs([str(tmp_path / "nowhere")])


def test_shards_hold_the_plain_encoders_codes_for_images_and_video_frames(media, vqgan_dir, tmp_path):
    out = tmp_path / "out"
    totals = tokenize(tokenize_cfg(out, [media], vqgan_dir, "video.frame_stride=2", "num_workers=2"))
    manifest = read_manifest(out / "manifest.json")
    assert manifest["files"] == 9 and manifest["samples"] == 8 and len(manifest["shards"]) == 3
    assert [s["path"] for s in manifest["skipped"]] == ["broken.jpg"]
    assert totals["images"] == 7 + 3  # seven photographs and frames 0, 2, 4 of the video
    sentences = {s.source[0]: s for s in read_sentences(out, vocab_size=64)}
    assert manifest["kinds"] == {"image": 7 * 64, "video": 3 * 64}

    for name in ("astronaut.png", "coffee.jpg", "sub/rocket.jpg", "retina.png"):
        sentence = sentences[name]
        assert sentence.kind == "image" and sentence.n_images == 1
        expected = plain_codes(vqgan_dir, load_image(media / name, size=32)[None])
        np.testing.assert_array_equal(sentence.tokens, expected)
    video = sentences["clip.mp4"]
    assert video.kind == "video" and video.n_images == 3
    frames = read_frames_the_original_way(media / "clip.mp4", 32)[::2]  # 64×48 → 32×32 with cv2.resize
    images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_array_equal(video.tokens, plain_codes(vqgan_dir, images))
    assert len(np.unique(np.concatenate([s.tokens for s in sentences.values()]))) > 10


def test_strict_stops_at_the_bad_file_and_a_rerun_resumes_without_redoing_shards(media, vqgan_dir, tmp_path):
    out = tmp_path / "out"
    files = list_inputs([str(media)])
    bad_shard = files.index(str(media / "broken.jpg")) // 3
    with pytest.raises(BadInputError, match="broken.jpg"):
        tokenize(tokenize_cfg(out, [media], vqgan_dir, "strict=true"))
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert len(done) == bad_shard and not (out / "manifest.json").exists()
    assert not list(out.glob("*.tmp"))

    totals = tokenize(tokenize_cfg(out, [media], vqgan_dir))
    assert totals["shards"] == 3 - bad_shard  # the finished shards were not redone ...
    assert {name: (out / name).stat().st_mtime_ns for name in done} == done  # ... nor rewritten
    assert read_manifest(out / "manifest.json")["samples"] == 8

    # A crash between a shard's tar and its summary: that shard alone is redone.
    (out / "progress" / "shard-000001.tar.json").unlink()
    assert tokenize(tokenize_cfg(out, [media], vqgan_dir))["shards"] == 1

    with pytest.raises(ValueError, match="plan.json.*files"):
        tokenize(tokenize_cfg(out, [media / "sub"], vqgan_dir))


def test_plan_shards_cuts_the_sorted_list_in_order():
    plan = plan_shards([f"f{i}" for i in range(7)], 3)
    assert [(s.name, s.first, s.files) for s in plan] == [
        ("shard-000000.tar", 0, ["f0", "f1", "f2"]),
        ("shard-000001.tar", 3, ["f3", "f4", "f5"]),
        ("shard-000002.tar", 6, ["f6"]),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_shards_and_write_the_same_data_as_one(media, vqgan_dir, tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    tokenize(tokenize_cfg(single, [media], vqgan_dir))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "lvm.tokenize",
        f"inputs=[{media}]",
        f"output_dir={double}",
        f"tokenizer_path={vqgan_dir}",
        "files_per_shard=3",
        "batch_size=4",
        "num_workers=0",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in result.stdout
    one, two = json.loads((single / "manifest.json").read_text()), json.loads((double / "manifest.json").read_text())
    assert one["shards"] == two["shards"] and one["skipped"] == two["skipped"]
    for shard in one["shards"]:  # byte-identical shards, whichever rank wrote them
        assert (single / shard["path"]).read_bytes() == (double / shard["path"]).read_bytes()

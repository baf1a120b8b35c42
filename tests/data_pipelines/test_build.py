"""`python -m data_pipelines.build`: real videos → the video builder → curation → a tiny VQGAN → shards;
manifest numbers, the codes in the shards, resuming after a lost shard, and refused reruns."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from skimage import data as skdata

from data_pipelines.build import build, curated
from data_pipelines.curation import Curator
from data_pipelines.paired import paired_sentences
from data_pipelines.sequences import sequence_sentences
from data_pipelines.synthetic import write_video_file
from data_pipelines.video import video_sentences
from lvm.data.manifest import read_manifest
from lvm.data.shards import read_sentences
from lvm.media.skips import BadInputError, SkipCounter
from lvm.tokenizer import load_vqgan
from tests.data_pipelines.inputs import write_random_bytes

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32  # the tiny VQGAN's resolution
N_FRAMES, STRIDES, N_EPOCHS = 4, (1, 2), 2
# (`++`: set the option whether or not conf/pipeline/video.yaml lists it.)
BUILDER = [
    f"++pipeline.builder.n_frames={N_FRAMES}",
    f"++pipeline.builder.strides=[{','.join(map(str, STRIDES))}]",
    f"++pipeline.builder.n_epochs={N_EPOCHS}",
]


def photo_video(path: Path, n_frames: int, offset: int, shape: tuple[int, int] = (SIZE, SIZE)) -> str:
    """A pan across the astronaut photograph: frame t is a crop moved by 3 px per frame."""
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((128, 128)))
    height, width = shape
    frames = [
        photo[offset + 2 * t : offset + 2 * t + height, offset + 3 * t : offset + 3 * t + width]
        for t in range(n_frames)
    ]
    return write_video_file(path, frames)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    """Three 10-frame videos and, second in the list, a corrupt one."""
    root = tmp_path_factory.mktemp("videos")
    good = [photo_video(root / f"pan{k}.mp4", 10, offset=20 * k) for k in range(3)]
    junk = str(write_random_bytes(root / "junk.mp4"))
    return [good[0], junk, good[1], good[2]]


def build_cfg(out_dir: Path, paths: list[str], vqgan_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "build",
            overrides=[
                "pipeline=video",
                f"pipeline.builder.paths=[{','.join(paths)}]",
                *BUILDER,
                f"output_dir={out_dir}",
                f"tokenizer_path={vqgan_dir}",
                "samples_per_shard=5",
                "images_per_batch=6",
                "progress=false",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory, videos, vqgan_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("built") / "video"
    return out, build(build_cfg(out, videos, vqgan_dir))


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def test_manifest_counts_samples_tokens_skips_and_config(built, videos):
    out, result = built
    manifest = read_manifest(out / "manifest.json")
    n_sentences = 3 * N_EPOCHS * len(STRIDES)  # good videos × epochs × strides
    assert manifest["samples"] == n_sentences == 12
    assert [s["samples"] for s in manifest["shards"]] == [5, 5, 2]
    assert manifest["tokens"] == n_sentences * N_FRAMES * 64 and manifest["kinds"] == {"video": manifest["tokens"]}
    assert manifest["tokens_per_image"] == 64 and manifest["vocab_size"] == 64
    assert manifest["files"] == 4 and [e["path"] for e in manifest["skipped"]] == [videos[1]]
    assert manifest["config"]["name"] == "video" and manifest["config"]["seed"] == 0
    assert manifest["config"]["pipeline"]["builder"]["paths"] == videos
    assert manifest["filtered"]["sentences_dropped"] == {} and manifest["filtered"]["rejected"] == []
    assert result["totals"].shards_written == 3 and result["totals"].images_tokenized == n_sentences * N_FRAMES
    assert sorted(p.name for p in (out / "progress").iterdir()) == [f"shard-00000{i}.tar.json" for i in range(3)]
    assert not list(out.rglob("*.tmp"))


def test_shards_hold_the_tokenizers_codes_of_the_builders_sentences(built, videos, vqgan_dir):
    out, _ = built
    expected = list(
        video_sentences(
            videos,
            SIZE,
            n_frames=N_FRAMES,
            strides=STRIDES,
            n_epochs=N_EPOCHS,
            rng_seed=0,
            skips=SkipCounter(warn=False),
        )
    )
    stored = read_sentences(out, vocab_size=64)
    assert [s.key for s in stored] == [f"{i:09d}" for i in range(len(expected))]
    model = load_vqgan(vqgan_dir).eval()
    for sentence, reference in zip(stored, expected, strict=True):
        assert (sentence.kind, sentence.source, sentence.n_images) == ("video", reference.source, N_FRAMES)
        assert sentence.meta == reference.meta  # stride, start, epoch: the layout
        pixels = torch.from_numpy(np.stack(reference.images)).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():  # the plain model, one image at a time
            codes = np.concatenate([model.get_code(image[None]).numpy().reshape(-1) for image in pixels])
        np.testing.assert_array_equal(sentence.tokens, codes)
    assert len(np.unique(np.concatenate([s.tokens for s in stored]))) > 10


def test_a_rerun_redoes_only_the_lost_shard(built, videos, vqgan_dir, tmp_path):
    original, _ = built
    out = tmp_path / "copy"
    shutil.copytree(original, out)
    before = shard_bytes(out)
    mtimes = {name: (out / name).stat().st_mtime_ns for name in before}
    (out / "shard-000002.tar").unlink()
    (out / "progress" / "shard-000002.tar.json").unlink()

    result = build(build_cfg(out, videos, vqgan_dir))
    totals = result["totals"]
    assert totals.shards_written == 1 and totals.images_tokenized == 2 * N_FRAMES  # the last shard's 2 sentences
    assert shard_bytes(out) == before  # the redone shard came out byte for byte the same
    assert {name: (out / name).stat().st_mtime_ns for name in mtimes if name != "shard-000002.tar"} == {
        name: t for name, t in mtimes.items() if name != "shard-000002.tar"
    }  # earlier shards not rewritten
    assert json.loads((out / "manifest.json").read_text()) == json.loads((original / "manifest.json").read_text())

    # Nothing lost: a rerun tokenizes nothing and writes the same manifest.
    again = build(build_cfg(out, videos, vqgan_dir))["totals"]
    assert again.shards_written == 0 and again.images_tokenized == 0 and again.sentences == 12


def test_a_rerun_with_another_config_or_changed_inputs_is_refused(built, videos, vqgan_dir, tmp_path):
    original, _ = built
    out = tmp_path / "copy"
    shutil.copytree(original, out)
    for override, field in (
        ("seed=1", "seed"),
        ("samples_per_shard=4", "samples_per_shard"),
        ("curation.min_side=16", "curation"),
    ):
        with pytest.raises(ValueError, match=f"plan.json.*another {field}"):
            build(build_cfg(out, videos, vqgan_dir, override))


def test_changed_inputs_under_the_same_config_are_refused(videos, vqgan_dir, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    copies = [shutil.copy(path, inputs) for path in videos]
    out = tmp_path / "out"
    build(build_cfg(out, copies, vqgan_dir))
    # The last video now has 5 frames: too short for stride 2, so sentences 8–11 change, in shards 1 and 2.
    photo_video(Path(copies[3]), 5, offset=40)
    with pytest.raises(ValueError, match="shard-000001.tar.json: field 'fingerprint'.*inputs changed"):
        build(build_cfg(out, copies, vqgan_dir))
    assert not (out / "manifest.json").exists()


def test_size_must_be_the_tokenizers(videos, vqgan_dir, tmp_path):
    with pytest.raises(ValueError, match="size: 64.*32×32"):
        build(build_cfg(tmp_path / "out", videos, vqgan_dir, "size=64"))


def test_command_line_with_curation_filters(videos, vqgan_dir, tmp_path):
    """The Hydra entry point end to end; a wide video is dropped by max_aspect and counted."""
    wide = photo_video(tmp_path / "wide.mp4", 10, offset=0, shape=(SIZE, 3 * SIZE))
    out = tmp_path / "out"
    paths = [videos[0], wide, videos[2]]
    command = [
        sys.executable,
        "-m",
        "data_pipelines.build",
        "pipeline=video",
        f"pipeline.builder.paths=[{','.join(paths)}]",
        *BUILDER,
        f"output_dir={out}",
        f"tokenizer_path={vqgan_dir}",
        "samples_per_shard=3",
        "progress=false",
        "curation.max_aspect=2",
        "curation.min_side=16",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(out / "manifest.json")
    per_video = N_EPOCHS * len(STRIDES)
    assert manifest["samples"] == 2 * per_video and len(manifest["shards"]) == 3
    filtered = manifest["filtered"]
    assert filtered["sentences_dropped"] == {"max_aspect": per_video}
    assert filtered["files_rejected"] == {"max_aspect": 1}
    assert filtered["sentences_kept"] == 2 * per_video
    assert [(e["path"], e["reason"]) for e in filtered["rejected"]] == [(wide, "max_aspect")]
    assert {s.source[0] for s in read_sentences(out, vocab_size=64)} == {videos[0], videos[2]}
    assert "max_aspect" in done.stdout and "curation filters" in done.stdout


def test_strict_stops_at_the_bad_file(videos, vqgan_dir, tmp_path):
    with pytest.raises(BadInputError, match="junk.mp4"):
        build(build_cfg(tmp_path / "out", videos, vqgan_dir, "strict=true"))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_dedup_leaves_frames_of_one_folder_alone_but_drops_a_copied_folder(tmp_path):
    """Sequence frames one pixel apart are near-duplicates of each other by design; a second copy of
    the whole folder is not. (`curated` alone: the tokenizer plays no part here.)"""
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((160, 160)))
    for folder in ("a", "copy_of_a"):
        (tmp_path / folder).mkdir()
        for t in range(8):
            Image.fromarray(photo[40:104, 40 + t : 104 + t]).save(tmp_path / folder / f"{t:02d}.png")
    folders = [str(tmp_path / "a"), str(tmp_path / "copy_of_a")]

    def kept(kind: str) -> list[str]:
        curator = Curator(dedup_max_distance=8)
        sentences = sequence_sentences(
            folders, SIZE, n_frames=4, max_stride=2, n_epochs=3, skips=SkipCounter(warn=False)
        )
        sentences = (dataclasses.replace(s, kind=kind) for s in sentences)
        return [Path(s.source[0]).parent.name for s in curated(sentences, curator)]

    assert kept("sequence") == ["a", "a", "a"]  # every clip of a; none of its copy
    assert kept("images") == []  # compared file by file, a clip's own frames are duplicates of each other


def test_dedup_does_not_call_an_image_a_duplicate_of_its_own_annotation(tmp_path):
    """Paired (photo, gray version): the two hash alike (pHash sees gray levels) but share a stem."""
    for i, name in enumerate(("astronaut", "coffee", "rocket", "brick")):
        image = Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((64, 64))
        image.save(write_dir(tmp_path / "x") / f"{i}.png")
        image.convert("L").save(write_dir(tmp_path / "y") / f"{i}.png")
    Image.open(tmp_path / "x" / "0.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "x" / "4.png")
    Image.open(tmp_path / "y" / "0.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "y" / "4.png")
    curator = Curator(dedup_max_distance=8)
    sentences = paired_sentences(tmp_path / "x", tmp_path / "y", SIZE, n_shots=1, skips=SkipCounter(warn=False))
    kept = [Path(s.source[0]).stem for s in curated(sentences, curator)]
    assert len(kept) == 4 and curator.files_rejected == {"duplicate": 1}  # one of 0 and its mirror 4
    assert {"1", "2", "3"} <= set(kept)


def write_dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path

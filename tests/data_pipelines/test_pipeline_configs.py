"""conf/pipeline/<kind>.yaml: each composes, names its builder as a partial with the function's own
parameters, and — its ??? paths filled with small real folders — yields sentences at its defaults."""

import functools
import importlib
import inspect
from pathlib import Path

import av
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lvm.media.skips import SkipCounter
from tests.data_pipelines.inputs import SIZE, write_png

CONF = Path(__file__).resolve().parents[2] / "conf"
KINDS = sorted(p.stem for p in (CONF / "pipeline").glob("*.yaml"))
# Given by the entry point at call time, so never in a pipeline yaml.
CALL_ARGUMENTS = {"size", "rng_seed", "skips", "strict"}

# kind → (function, the sentence kind it writes, images per sentence at the yaml's defaults)
EXPECTED = {
    "video": ("data_pipelines.video.video_sentences", "video", 16),
    "sequence": ("data_pipelines.sequences.sequence_sentences", "sequence", 16),
    "image": ("data_pipelines.sequences.image_sentences", "images", 16),
    "paired": ("data_pipelines.paired.paired_sentences", "paired", 16),
    "colorization": ("data_pipelines.colorization.colorization_sentences", "colorization", 16),
    "inpainting": ("data_pipelines.inpainting.inpainting_sentences", "inpainting", 16),
    "category": ("data_pipelines.category.category_sentences", "category", 16),
    "multiview": ("data_pipelines.multiview.multiview_sentences", "multiview", 16),
    "multi_dataset": ("data_pipelines.multi_dataset.multi_dataset_sentences", "multi_dataset", 3 * 2),
    "multi_sequence": ("data_pipelines.multi_sequence.multi_sequence_sentences", "multi_sequence", 16),
}


def function(target):
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def write_gray_video(path, n_frames):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for t in range(n_frames):
            frame = np.full((SIZE, SIZE, 3), t % 250, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def paths(tmp_path_factory, photo):
    """Just enough files for one sentence (or a few) of every kind at its yaml's defaults."""
    base = tmp_path_factory.mktemp("pipelines")

    def images(folder, n, prefix="item_"):
        return [
            str(write_png(base / folder / f"{prefix}{i:02d}.png", photo[i : i + SIZE, i : i + SIZE])) for i in range(n)
        ]

    frames = images("frames", 16)
    images("annotations", 16)
    images("classes/n01", 16)
    for k in range(4):
        images(f"co3d/chair/{k}", 4, prefix="view")
    for clip in ("a", "b"):
        images(f"streams/rgb/{clip}", 4, prefix="")
        images(f"streams/depth/{clip}", 4, prefix="")
    video = write_gray_video(base / "clip.mp4", 121)  # 16 frames at stride 8 span 121
    return {
        "video": {"paths": [video]},
        "sequence": {"folders": [str(base / "frames")]},
        "image": {"paths": frames},
        "paired": {"input_dir": str(base / "frames"), "output_dir": str(base / "annotations")},
        "colorization": {"paths": frames[:8]},
        "inpainting": {"root": str(base / "frames")},
        "category": {"root": str(base / "classes")},
        "multiview": {"root": str(base / "co3d")},
        "multi_dataset": {"roots": f"{base / 'frames'}::{base / 'annotations'}"},
        "multi_sequence": {"roots": [str(base / "streams" / "rgb" / "*"), str(base / "streams" / "depth" / "*")]},
    }


def test_every_kind_has_a_config():
    assert KINDS == sorted(EXPECTED)


@pytest.mark.parametrize("kind", KINDS)
def test_config_names_the_builder_with_its_parameters(kind):
    cfg = OmegaConf.load(CONF / "pipeline" / f"{kind}.yaml")
    assert cfg.kind == kind and cfg.builder._partial_ is True
    assert cfg.builder._target_ == EXPECTED[kind][0]
    parameters = inspect.signature(function(cfg.builder._target_)).parameters
    options = {key for key in cfg.builder if not key.startswith("_")}
    assert options <= set(parameters) - CALL_ARGUMENTS
    required = {name for name, p in parameters.items() if p.default is inspect.Parameter.empty}
    assert required - CALL_ARGUMENTS <= options  # nothing left for the entry point to guess
    missing = {key for key in options if OmegaConf.is_missing(cfg.builder, key)}
    assert missing and missing <= required  # only the paths are ???, and they have no default to fall back on
    # The yaml's defaults are the function's own where it has one, except where the original's differ.
    spec_defaults = {
        ("video", "strides"),
        ("video", "n_frames"),
        ("paired", "n_epochs"),
        ("multi_sequence", "n_frames"),
    }
    for key in options - missing:
        if (kind, key) not in spec_defaults:
            assert cfg.builder[key] == parameters[key].default, key


@pytest.mark.parametrize("kind", KINDS)
def test_composed_partial_yields_sentences(kind, paths):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name=f"pipeline/{kind}")
    for key, value in paths[kind].items():
        cfg.pipeline.builder[key] = value
    builder = instantiate(cfg.pipeline.builder)
    target, sentence_kind, length = EXPECTED[kind]
    assert isinstance(builder, functools.partial) and builder.func is function(target)
    skips = SkipCounter()
    sentences = list(builder(size=SIZE, rng_seed=0, skips=skips, strict=True))
    assert sentences and skips.n_skipped == 0
    assert all(s.kind == sentence_kind and len(s) == length for s in sentences)
    assert all(image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 for s in sentences for image in s.images)


def test_paths_from_the_command_line(paths):
    roots = paths["multi_dataset"]["roots"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            config_name="pipeline/multi_dataset",
            overrides=[f"pipeline.builder.roots='{roots}'", "pipeline.builder.n_shots=2"],
        )
    sentences = list(instantiate(cfg.pipeline.builder)(size=SIZE, rng_seed=0))
    assert len(sentences) == 8 and all(len(s) == 2 * 2 for s in sentences)


@pytest.mark.skipif(not (CONF / "build.yaml").exists(), reason="no conf/build.yaml (the entry point's root)")
@pytest.mark.parametrize("kind", KINDS)
def test_build_root_selects_the_pipeline(kind):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="build", overrides=[f"pipeline={kind}"])
    assert cfg.pipeline.kind == kind and cfg.pipeline.builder._target_ == EXPECTED[kind][0]

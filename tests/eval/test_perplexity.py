"""Perplexity of target images and video frames against transformers' own loss with the context
positions masked; the aggregation formulas; clip sampling; every bad input named or counted."""

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch

from lvm.eval.perplexity import (
    CodedExample,
    ExampleScore,
    evaluate_perplexity,
    evaluate_video_perplexity,
    score_examples,
    summarize,
    target_nll,
)
from lvm.eval.video_clips import find_videos, read_clip
from lvm.media.images import load_image
from lvm.media.skips import BadInputError, SkippedInputWarning
from lvm.tokenizer.codec import encode_images
from tests.eval.conftest import (
    MAX_SEQ_LEN,
    TOKENS_PER_IMAGE,
    frame_level,
    hf_target_loss,
    write_frame_folder,
    write_png,
    write_video,
)
from tests.original_video import read_frames_the_original_way, write_detailed_video

# (inputs, targets) per jsonl line; lines 2 and 4 have the same length, so they share a forward pass.
LINES = [
    (["a.png"], ["b.png"]),
    (["a.png", "c.png"], ["d.png"]),
    (["sub/e.png"], ["b.png", "c.png"]),
    (["d.png", "b.png"], ["a.png"]),
]


def codes_of(vqgan, paths) -> np.ndarray:
    images = torch.stack([load_image(p, size=32) for p in paths])
    return encode_images(vqgan, images).numpy().reshape(-1)


@pytest.fixture
def prompts(tmp_path):
    """images/{a,b,c,d,sub/e}.png (40×48, resized to 32 on reading) and prompts.jsonl listing LINES."""
    for seed, name in enumerate(["a", "b", "c", "d", "sub/e"]):
        write_png(tmp_path / "images" / f"{name}.png", seed)
    jsonl = tmp_path / "images" / "prompts.jsonl"
    jsonl.write_text("\n".join(json.dumps({"input": i, "target": t}) for i, t in LINES) + "\n\n")
    return jsonl


def test_per_example_loss_is_transformers_loss_on_target_positions(prompts, lm, hf_lm, vqgan, tmp_path):
    summary = evaluate_perplexity(lm, vqgan, prompts, tmp_path / "out", batch_size=8, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "out" / "perplexity.csv")))
    assert [int(r["line"]) for r in rows] == [1, 2, 3, 4]
    expected = []
    for row, (inputs, targets) in zip(rows, LINES):
        base = prompts.parent
        input_codes = codes_of(vqgan, [base / p for p in inputs])
        target_codes = codes_of(vqgan, [base / p for p in targets])
        reference = hf_target_loss(hf_lm, input_codes, target_codes)
        assert float(row["loss"]) == pytest.approx(reference, rel=1e-5)
        assert float(row["perplexity"]) == pytest.approx(math.exp(reference), rel=1e-5)
        assert int(row["n_input_tokens"]) == len(inputs) * TOKENS_PER_IMAGE
        assert int(row["n_target_tokens"]) == len(targets) * TOKENS_PER_IMAGE
        expected.append((reference, len(targets) * TOKENS_PER_IMAGE))
    losses = np.array([loss for loss, _ in expected])
    weights = np.array([n for _, n in expected])
    assert summary["mean_perplexity"] == pytest.approx(np.mean(np.exp(losses)), rel=1e-5)
    assert summary["token_loss"] == pytest.approx(np.sum(losses * weights) / weights.sum(), rel=1e-5)
    assert json.loads((tmp_path / "out" / "perplexity.json").read_text())["n_examples"] == 4
    assert summary["n_skipped"] == 0
    # The predictions are far from uniform: a target position off by one would show.
    assert abs(summary["token_loss"] - math.log(72)) > 0.1


def test_batching_and_target_alignment(lm, hf_lm):
    rng = np.random.default_rng(0)
    examples = [
        CodedExample(str(i), f"ex{i}", rng.integers(0, 64, n_in), rng.integers(0, 64, n_t))
        for i, (n_in, n_t) in enumerate([(5, 3), (7, 1), (5, 3), (1, 7), (2, 9)])
    ]
    one = score_examples(lm, examples, batch_size=1)
    many = score_examples(lm, examples, batch_size=8)
    for example, a, b in zip(examples, one, many):
        reference = hf_target_loss(hf_lm, example.input_codes, example.target_codes)
        assert a.loss == pytest.approx(reference, rel=1e-5) and b.loss == pytest.approx(reference, rel=1e-5)
    rows = target_nll(lm, examples[:1])
    assert rows[0].shape == (3,)


def test_aggregation_formulas():
    scores = [ExampleScore("a", 4, 2, math.log(2.0)), ExampleScore("b", 4, 6, math.log(8.0))]
    summary = summarize(scores)
    assert summary["mean_perplexity"] == pytest.approx(5.0)  # (2 + 8) / 2, the original's number
    assert summary["mean_loss"] == pytest.approx((math.log(2) + math.log(8)) / 2)
    token_loss = (2 * math.log(2) + 6 * math.log(8)) / 8
    assert summary["token_loss"] == pytest.approx(token_loss)
    assert summary["token_perplexity"] == pytest.approx(math.exp(token_loss))  # 2^(20/8)
    assert summary["n_target_tokens"] == 8
    with pytest.raises(ValueError, match="no examples"):
        summarize([])


def test_too_long_and_empty_examples_are_refused_naming_them(lm):
    long = CodedExample("9", "p.jsonl:9", np.zeros(MAX_SEQ_LEN, dtype=np.int64), np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match=rf"p.jsonl:9: {MAX_SEQ_LEN} context \+ 1 target tokens .* max_seq_len"):
        target_nll(lm, [long])
    empty = CodedExample("3", "p.jsonl:3", np.zeros(0, dtype=np.int64), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="p.jsonl:3: 0 context and 4 target tokens"):
        target_nll(lm, [empty])
    big = CodedExample("4", "p.jsonl:4", np.full(3, 80), np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="p.jsonl:4: code 80 ≥ the model's vocab_size 72"):
        target_nll(lm, [big])


def test_a_line_filling_the_window_is_scored_one_image_more_is_refused_naming_the_line(prompts, lm, vqgan, tmp_path):
    prompts.write_text(json.dumps({"input": ["a.png"] * 4, "target": ["b.png"]}) + "\n")
    assert evaluate_perplexity(lm, vqgan, prompts, tmp_path / "out", progress=False)["n_examples"] == 1  # 320 tokens
    prompts.write_text(prompts.read_text() + json.dumps({"input": ["a.png"] * 5, "target": ["b.png"]}) + "\n")
    with pytest.raises(
        ValueError,
        match=rf"prompts.jsonl:2: 320 context \+ 64 target tokens = 384 exceed the "
        rf"model's max_seq_len {MAX_SEQ_LEN}",
    ):
        evaluate_perplexity(lm, vqgan, prompts, tmp_path / "out", progress=False)


BAD_LINES = {
    "missing-key": ('{"input": ["a.png"], "tgt": ["b.png"]}', r"no field 'target' \(fields: \['input', 'tgt'\]\)"),
    "null": ('{"input": ["a.png"], "target": null}', r"field 'target' must be a list of image paths, got null"),
    "empty": ('{"input": [], "target": ["b.png"]}', r"field 'input' is an empty list"),
    "not-paths": ('{"input": [3], "target": ["b.png"]}', r"field 'input' must be a list of image paths"),
    "not-json": ("not json", r"not valid JSON"),
    "not-object": ("[1, 2]", r"expected a JSON object, got list"),
    "missing-image": (
        '{"input": ["missing.png"], "target": ["b.png"]}',
        r"field 'input'\[0\]: .*missing.png: no such file",
    ),
    "unreadable-image": (
        '{"input": ["a.png"], "target": ["b.png", "broken.png"]}',
        r"field 'target'\[1\]: .*broken.png: cannot read image",
    ),
}


@pytest.mark.parametrize("line, message", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_lines_name_file_line_and_field_or_are_skipped_and_counted(prompts, lm, vqgan, tmp_path, line, message):
    (prompts.parent / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = prompts.read_text().strip().splitlines()
    prompts.write_text("\n".join([good[0], line, good[1]]) + "\n")
    with pytest.raises(ValueError, match=rf"{prompts}:2: {message}"):
        evaluate_perplexity(lm, vqgan, prompts, tmp_path / "out", progress=False)
    with pytest.warns(SkippedInputWarning, match=rf"{prompts}:2: skipped"):
        summary = evaluate_perplexity(lm, vqgan, prompts, tmp_path / "out", skip_bad=True, progress=False)
    assert (summary["n_examples"], summary["n_seen"], summary["n_skipped"]) == (2, 3, 1)
    assert summary["skipped"][0]["where"] == f"{prompts}:2"
    assert json.loads((tmp_path / "out" / "perplexity.json").read_text())["n_skipped"] == 1


def test_base_dir_and_absolute_paths(prompts, lm, vqgan, tmp_path):
    jsonl = tmp_path / "elsewhere.jsonl"
    jsonl.write_text(json.dumps({"input": ["a.png"], "target": [str(prompts.parent / "b.png")]}) + "\n")
    summary = evaluate_perplexity(lm, vqgan, jsonl, tmp_path / "out", base_dir=prompts.parent, progress=False)
    reference = evaluate_perplexity(lm, vqgan, prompts, tmp_path / "ref", progress=False)
    first = next(csv.DictReader(open(tmp_path / "ref" / "perplexity.csv")))
    assert summary["token_loss"] == pytest.approx(float(first["loss"]))
    assert reference["n_examples"] == 4
    with pytest.raises(ValueError, match=r"elsewhere.jsonl:1: field 'input'\[0\]: .*a.png: no such file"):
        evaluate_perplexity(lm, vqgan, jsonl, tmp_path / "out", progress=False)  # relative to the jsonl's folder


# --- video -----------------------------------------------------------------------------------------


def levels(frames: torch.Tensor) -> list[int]:
    """The gray level of each frame (3, H, W) in [0, 1]."""
    return [int(round(float(f.mean()) * 255)) for f in frames]


def test_clip_start_is_seeded_uniform_and_independent_of_other_videos(tmp_path):
    write_frame_folder(tmp_path / "frames" / "v1", 30)
    write_frame_folder(tmp_path / "frames" / "v2", 30)
    sources = find_videos(tmp_path / "frames")
    assert [s.key for s in sources] == ["v1", "v2"]
    starts = set()
    for seed in range(40):
        frames, meta = read_clip(sources[0], n_frames=4, stride=3, seed=seed, size=32)
        again, _ = read_clip(sources[0], n_frames=4, stride=3, seed=seed, size=32)
        torch.testing.assert_close(frames, again)
        start = meta["start"]
        assert 0 <= start <= 30 - 10 and meta["n_frames_available"] == 30
        assert levels(frames) == [frame_level(start + 3 * i) for i in range(4)]  # natural order: frame_10 after frame_9
        starts.add(start)
    assert len(starts) > 10  # random over seeds, not a fixed start
    # The start of v1 depends on (seed, its name) only, not on which other videos are listed with it.
    alone = find_videos(str(tmp_path / "frames" / "v1"))
    assert read_clip(alone[0], 4, 3, 7, 32)[1]["start"] == read_clip(sources[0], 4, 3, 7, 32)[1]["start"]


def test_video_files_and_frame_folders_short_ones_skipped_and_counted(tmp_path, lm, hf_lm, vqgan):
    root = tmp_path / "videos"
    write_frame_folder(root / "folders" / "long", 12)
    write_frame_folder(root / "folders" / "short", 5)  # a clip of 4 at stride 2 spans 7 frames
    write_video(root / "clip.mp4", 9)
    write_video(root / "tiny.mp4", 3)
    with pytest.warns(SkippedInputWarning, match="too short"):
        summary = evaluate_video_perplexity(
            lm, vqgan, root, tmp_path / "out", n_context_frames=3, n_target_frames=1, stride=2, seed=1, progress=False
        )
    assert (summary["n_examples"], summary["n_seen"], summary["n_skipped"]) == (2, 4, 2)
    reasons = {s["where"].split("/")[-1]: s["reason"] for s in summary["skipped"]}
    assert reasons == {
        "short": "too short: 5 frames, a clip of 4 at stride 2 needs 7",
        "tiny.mp4": "too short: 3 frames, a clip of 4 at stride 2 needs 7",
    }
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "out" / "video_perplexity.csv"))}
    assert set(rows) == {"clip.mp4", "folders/long"}
    for source in find_videos(str(root)):
        if source.key not in rows:
            continue
        frames, meta = read_clip(source, 4, 2, 1, 32)
        assert int(rows[source.key]["start"]) == meta["start"]
        assert np.allclose(levels(frames), [frame_level(meta["start"] + 2 * i) for i in range(4)], atol=3)
        codes = encode_images(vqgan, frames).numpy()
        reference = hf_target_loss(hf_lm, codes[:3].reshape(-1), codes[3:].reshape(-1))
        assert float(rows[source.key]["loss"]) == pytest.approx(reference, rel=1e-5)
        assert int(rows[source.key]["n_target_tokens"]) == TOKENS_PER_IMAGE


@pytest.mark.parametrize("center_crop", [None, 0.8])
def test_video_clip_frames_are_the_originals_pixels(tmp_path, center_crop):
    # As eval_video_perplexity.py reads them: read_frames_from_video → cv2.resize after the crop.
    path = write_detailed_video(tmp_path / "v" / "clip.mp4", n_frames=8)
    frames, meta = read_clip(
        find_videos(str(tmp_path / "v"))[0], n_frames=3, stride=2, seed=0, size=48, center_crop=center_crop
    )
    reference = read_frames_the_original_way(path, 48, center_crop or 1.0)
    expected = np.stack([reference[meta["start"] + 2 * i] for i in range(3)])
    np.testing.assert_array_equal((frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), expected)


def test_center_crop_and_unreadable_videos(tmp_path, lm, vqgan):
    folder = write_frame_folder(tmp_path / "v" / "f", 6)
    (tmp_path / "v" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(BadInputError, match=r"broken.mp4: "):
        evaluate_video_perplexity(
            lm, vqgan, str(tmp_path / "v"), tmp_path / "out", n_context_frames=2, stride=1, progress=False
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = evaluate_video_perplexity(
            lm,
            vqgan,
            str(tmp_path / "v"),
            tmp_path / "out",
            n_context_frames=2,
            stride=1,
            center_crop=0.5,
            skip_bad=True,
            progress=False,
        )
    assert any("broken.mp4: skipped" in str(w.message) for w in caught)
    assert (summary["n_examples"], summary["n_skipped"]) == (1, 1)
    frames, _ = read_clip(find_videos(str(folder))[0], 3, 1, 0, 32, center_crop=0.5)
    assert frames.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="no video files or frame folders"):
        evaluate_video_perplexity(lm, vqgan, str(tmp_path / "nothing" / "*.mp4"), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="n_target_frames must be ≥ 1"):
        evaluate_video_perplexity(lm, vqgan, str(folder), tmp_path / "out", n_target_frames=0, progress=False)

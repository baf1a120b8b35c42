"""code_persistence against a patch-by-patch count with the VQGAN's own get_code on each frame."""

import math

import numpy as np
import pytest
import torch

from lvm.tokenizer.training.code_persistence import code_persistence


def clips_with_motion(size: int, seed: int = 0) -> np.ndarray:
    """2 clips × 4 frames: a random start, then each frame changes one square by a lot and adds ±1 noise
    elsewhere (still: at most 2 levels), so both kinds of patches occur."""
    rng = np.random.default_rng(seed)
    clips = np.empty((2, 4, size, size, 3), dtype=np.uint8)
    for c in range(2):
        frame = rng.integers(20, 235, (size, size, 3)).astype(np.int16)
        for t in range(4):
            clips[c, t] = frame
            frame = frame + rng.integers(-1, 2, frame.shape)
            y, x = rng.integers(0, size - 6, 2)
            frame[y : y + 6, x : x + 6] = rng.integers(0, 256, 3)
    return clips


def test_persistence_counts_kept_codes_over_still_and_all_patches(model):
    clips = clips_with_motion(model.config.resolution)
    still_kept, all_kept, still_n, all_n = 0, 0, 0, 0
    f, side = model.config.downsample_factor, model.config.latent_size
    with torch.no_grad():
        for clip in clips:
            codes = [model.get_code(torch.from_numpy(fr).permute(2, 0, 1)[None].float() / 255)[0] for fr in clip]
            for t in range(1, len(clip)):
                for i in range(side):
                    for j in range(side):
                        before = clip[t - 1, i * f : (i + 1) * f, j * f : (j + 1) * f].astype(int)
                        after = clip[t, i * f : (i + 1) * f, j * f : (j + 1) * f].astype(int)
                        same = bool(codes[t][i * side + j] == codes[t - 1][i * side + j])
                        all_kept, all_n = all_kept + same, all_n + 1
                        if np.abs(after - before).max() <= 2:
                            still_kept, still_n = still_kept + same, still_n + 1
    assert 0 < still_n < all_n  # both kinds of patches are there
    still, overall = code_persistence(model, clips, batch_size=3)
    assert still == pytest.approx(still_kept / still_n) and overall == pytest.approx(all_kept / all_n)
    # Codes handed in (what the demo does with its round trip's codes) give the same count, and are checked.
    frame_codes = model.get_code(torch.from_numpy(clips.reshape(-1, *clips.shape[2:])).permute(0, 3, 1, 2) / 255)
    assert code_persistence(model, clips, codes=frame_codes) == (still, overall)
    with pytest.raises(ValueError, match="do not match clips"):
        code_persistence(model, clips, codes=frame_codes[:-1])


def test_a_static_clip_keeps_every_code_and_bad_input_is_named(model):
    frame = clips_with_motion(model.config.resolution)[:1, :1]
    assert code_persistence(model, np.repeat(frame, 3, axis=1)) == (1.0, 1.0)
    # Inverting every pixel leaves no still patch: that share is undefined, not 0 or 1.
    still, overall = code_persistence(model, np.stack([frame[:, 0], 255 - frame[:, 0]], axis=1))
    assert math.isnan(still) and 0.0 <= overall <= 1.0
    with pytest.raises(ValueError, match="uint8 clips"):
        code_persistence(model, frame.astype(np.float32))

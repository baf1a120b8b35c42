"""How steady a tokenizer's codes are over time: of the patches of consecutive video frames whose pixels do not
change, the share that keep their code (README, "What the tokens show"). An LVM continues a video by predicting
the next frame's codes; a code that flips where nothing moved is noise it cannot learn, and a greedy answer
built from such codes comes out blurred."""

from __future__ import annotations

import numpy as np
import torch

from lvm.media.images import images_to_tensor
from lvm.tokenizer.codec import BATCH_SIZE, encode_images
from lvm.tokenizer.vqgan import VQGANModel


def code_persistence(
    vqgan: VQGANModel,
    clips: np.ndarray,
    still_threshold: int = 2,
    batch_size: int = BATCH_SIZE,
    codes: torch.Tensor | None = None,
) -> tuple[float, float]:
    """(share of still patches that keep their code, share of all patches that keep it) from each frame to the
    next of `clips` (N, T, R, R, 3) uint8, R = the VQGAN's resolution. A patch is the f×f pixels one code covers;
    it is still when no pixel channel changes by more than `still_threshold` levels. NaN without still patches.
    `codes` (N·T, tokens per image), the frames' codes in clip order, saves encoding them again."""
    if clips.ndim != 5 or clips.dtype != np.uint8 or clips.shape[1] < 2:
        raise ValueError(f"code_persistence expects uint8 clips (N, T ≥ 2, H, W, 3), got {clips.dtype} {clips.shape}")
    n, t, height, width, _ = clips.shape
    f, side = vqgan.config.downsample_factor, vqgan.config.latent_size
    if codes is None:
        codes = encode_images(vqgan, images_to_tensor(clips.reshape(n * t, height, width, 3)), batch_size=batch_size)
    elif codes.shape != (n * t, side * side):
        raise ValueError(f"code_persistence: codes {tuple(codes.shape)} do not match clips {clips.shape}")
    codes = codes.reshape(n, t, side, side).numpy()
    pixels = clips.astype(np.int16).reshape(n, t, side, f, side, f, 3)
    change = np.abs(np.diff(pixels, axis=1)).max(axis=(3, 5, 6))  # (N, T−1, side, side): per patch
    kept = codes[:, 1:] == codes[:, :-1]
    still = change <= still_threshold
    return (float(kept[still].mean()) if still.any() else float("nan")), float(kept.mean())

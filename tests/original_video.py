"""The original's way of reading video frames, re-stated with OpenCV as an independent reference.

`evaluation/vqlm_demo/utils.py` in github.com/ytongbai/LVM (`read_all_frames_from_video`,
`read_frames_from_video`): `cv2.VideoCapture` decodes BGR frames; an optional centre crop slices the
central `center_crop` fraction of the height and of the width; `cv2.resize(frame, (256, 256))` resizes
with OpenCV's default, INTER_LINEAR; the channels are flipped to RGB at the end.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data_pipelines.synthetic import write_video_file


def read_frames_the_original_way(path: str | Path, size: int, center_crop: float = 1.0) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if center_crop < 1.0:
            height, width, _ = frame.shape
            frame = frame[
                int((1 - center_crop) * height / 2) : int((1 + center_crop) * height / 2),
                int((1 - center_crop) * width / 2) : int((1 + center_crop) * width / 2),
                :,
            ]
        frames.append(np.ascontiguousarray(cv2.resize(frame, (size, size))[..., ::-1]))
    capture.release()
    assert frames, f"OpenCV decoded no frame of {path}"
    return frames


def write_detailed_video(
    path: Path, n_frames: int = 6, width: int = 160, height: int = 120, codec: str | None = None
) -> Path:
    """A width×height video of fine moving stripes and a gradient: detail that antialiased and plain
    bilinear shrinking render differently, so a test can tell the two apart."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(n_frames):
        red = 128 + 100 * np.sin((xx + 3 * t) * 1.3)
        green = 128 + 100 * np.cos((yy - 2 * t) * 0.9)
        blue = 255 * (xx + yy) / (width + height)
        frames.append(np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_video_file(path, frames, codec=codec)
    return Path(path)

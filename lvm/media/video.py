"""Video files → HWC uint8 RGB frames, decoded with PyAV and resized with OpenCV as the original does."""

from __future__ import annotations

import os

import av
import cv2
import numpy as np

from lvm.media.skips import BadInputError


def _check_crop_fraction(center_crop: float) -> None:
    if not 0.0 < center_crop <= 1.0:
        raise ValueError(f"center_crop: expected a fraction in (0, 1], got {center_crop}")


def crop_video_frame(frame: np.ndarray, center_crop: float) -> np.ndarray:
    """The central `center_crop` fraction of the frame's height and of its width, sliced as the original's
    video readers slice it (`evaluation/vqlm_demo/utils.py`: `read_frames_from_video`)."""
    _check_crop_fraction(center_crop)
    height, width = frame.shape[:2]
    return frame[
        int((1 - center_crop) * height / 2) : int((1 + center_crop) * height / 2),
        int((1 - center_crop) * width / 2) : int((1 + center_crop) * width / 2),
    ]


def resize_video_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """HWC uint8 frame → ``size``×``size`` with OpenCV's `cv2.resize` (INTER_LINEAR, no antialiasing when
    shrinking), exactly as the original resizes video frames, so our codes match those LVM-7B was trained
    on. Resizing acts on each channel alone, so RGB here gives the pixels of the original's BGR resize."""
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)


def read_video_frames(path: str | os.PathLike, size: int | None, center_crop: float | None = None) -> list[np.ndarray]:
    """Decode every frame of the first video stream as HWC uint8 RGB: centre-cropped to the `center_crop`
    fraction of each side when given (`crop_video_frame`), then resized to ``size``×``size`` with
    OpenCV (`resize_video_frame`); `size=None` keeps the decoded size. The whole video is held in
    memory: fine for clips, not for hour-long files.

    PyAV decodes (through FFmpeg, as OpenCV's `VideoCapture` does, so the decoded frames are the same);
    OpenCV resizes, as the original does. Image files are read with PIL (`read_image`), as the original
    reads them.

    Raises `BadInputError` naming the file when it cannot be opened, has no video stream, fails
    while decoding, or yields fewer frames than its header declares (a file cut short after its
    index, which FFmpeg otherwise decodes without complaint).
    """
    if center_crop is not None:
        _check_crop_fraction(center_crop)  # here, so a bad value is not reported as a bad file
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInputError(path, "no video stream")
            stream = container.streams.video[0]
            declared = stream.frames  # 0 when the container does not say
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                if center_crop is not None:
                    rgb = crop_video_frame(rgb, center_crop)
                if size is not None:
                    rgb = resize_video_frame(rgb, size)
                frames.append(rgb)
    except BadInputError:
        raise
    except FileNotFoundError:  # not a bad file to skip: a path that names nothing
        raise FileNotFoundError(f"{path}: no such video file") from None
    except (av.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise BadInputError(path, reason.lower()) from error
    if not frames:
        raise BadInputError(path, "no frames decoded")
    if declared and len(frames) < declared:
        raise BadInputError(path, f"truncated: decoded {len(frames)} of {declared} frames")
    return frames

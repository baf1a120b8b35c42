"""Video sentences: `n_frames` frames of one video at a fixed stride from a random start, one
sentence per (video, stride, epoch) — the original's "video" kind."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

from data_pipelines.common import check_positive
from lvm.data.image_sentences import ImageSentence
from lvm.media.clips import clip_indices, clip_span, sample_clip_start
from lvm.media.files import VIDEO_EXTENSIONS, expand_inputs
from lvm.media.skips import BadInputError, SkipCounter, skip_or_raise
from lvm.media.video import read_video_frames


def video_sentences(
    paths: Sequence[str | os.PathLike],
    size: int,
    n_frames: int,
    strides: Sequence[int] = (1,),
    rng_seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    n_epochs: int = 1,
) -> Iterator[ImageSentence]:
    """For each video, each epoch and each stride: `n_frames` frames at that stride from a uniform
    random start. A video too short for a stride is skipped for that stride (recorded); an
    unreadable video is skipped altogether (recorded), or raised when ``strict``.

    Each video is decoded once (all frames, resized to `size`) and reused for every stride and epoch.
    """
    check_positive(size=size, n_frames=n_frames, n_epochs=n_epochs)
    if not strides:
        raise ValueError("strides is empty")
    check_positive(**{f"strides[{i}]": s for i, s in enumerate(strides)})
    skips = skips if skips is not None else SkipCounter()  # a private one still warns per skip
    rng = random.Random(rng_seed)
    for path in expand_inputs(paths, VIDEO_EXTENSIONS):
        path = str(path)
        skips.saw()
        try:
            frames = read_video_frames(path, size)
        except BadInputError as error:
            skip_or_raise(path, error.reason, skips, strict)
            continue
        for stride in strides:
            if clip_span(n_frames, stride) > len(frames):
                reason = f"too short for stride {stride}: {len(frames)} frames, needs {clip_span(n_frames, stride)}"
                skip_or_raise(path, reason, skips, strict)
        for epoch in range(n_epochs):
            for stride in strides:
                start = sample_clip_start(len(frames), n_frames, stride, rng)
                if start is None:
                    continue  # recorded once above, not once per epoch
                yield ImageSentence(
                    images=[frames[i] for i in clip_indices(start, n_frames, stride)],
                    kind="video",
                    source=[path],
                    meta={"stride": stride, "start": start, "epoch": epoch},
                )

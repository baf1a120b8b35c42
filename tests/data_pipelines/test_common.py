"""What every sentence builder shares: clip sampling with a stride cap, and drawing groups of loadable items."""

import random

import pytest

from data_pipelines.common import draw_groups, sample_clip
from lvm.media.clips import clip_indices, clip_span, sample_clip_start


def test_clip_sampling_fits_and_is_seeded():
    assert clip_span(4, 3) == 10 and clip_indices(2, 4, 3) == [2, 5, 8, 11]
    assert sample_clip_start(9, 4, 3, random.Random(0)) is None
    assert sample_clip(3, 4, 2, random.Random(0)) is None
    draws = [sample_clip(20, 5, 4, random.Random(seed)) for seed in range(50)]
    for start, stride in draws:
        assert 1 <= stride <= 4 and start + clip_span(5, stride) <= 20
    assert {stride for _, stride in draws} == {1, 2, 3, 4}
    # With 9 frames and 5 per clip only strides 1 and 2 fit: the cap keeps every draw valid.
    assert {sample_clip(9, 5, 4, random.Random(seed))[1] for seed in range(50)} == {1, 2}
    assert draws == [sample_clip(20, 5, 4, random.Random(seed)) for seed in range(50)]
    with pytest.raises(ValueError, match="max_stride"):
        sample_clip(10, 2, 0, random.Random(0))


def test_draw_groups_passes_over_unloadable_items():
    groups = list(draw_groups(range(10), 3, random.Random(0), lambda i: None if i == 4 else i * i))
    flat = [item for group in groups for item, _ in group]
    assert len(groups) == 3 and all(len(g) == 3 for g in groups)
    assert 4 not in flat and len(set(flat)) == 9
    assert all(loaded == item * item for group in groups for item, loaded in group)

"""Visual sentences of the demo corpus (`data_pipelines.synthetic.make_demo_corpus`), per kind, as the
demo's tokenizer takes them. Only the existing builders are used, so the demo exercises the same
code as real data."""

from __future__ import annotations

import random

from data_pipelines.common import check_positive
from data_pipelines.paired import paired_sentences
from data_pipelines.sequences import sequence_sentences
from data_pipelines.video import video_sentences
from lvm.data.image_sentences import ImageSentence
from lvm.media.skips import SkipCounter

DEMO_KINDS = ("video", "paired", "sequence")
# Annotation folder of the corpus → task name in each paired sentence's meta (x = the photo crop).
PAIRED_TASKS = {"edges_dir": "edges", "gray_dir": "gray"}


def demo_sentences(
    corpus: dict,
    split: str,
    images_per_sentence: int = 8,
    seed: int = 0,
    skips: SkipCounter | None = None,
    strict: bool = False,
    paired_epochs: int = 1,
    video_epochs: int | None = None,
) -> dict[str, list[ImageSentence]]:
    """Sentences of `images_per_sentence` images per kind, from one split of a corpus layout (the
    dict `make_demo_corpus` / `load_demo_corpus` return). Deterministic given `seed`.

    - ``"video"``: clips of consecutive frames (stride 1) from each video; each video gives
      `video_epochs` clips (default ``n_frames // images_per_sentence``, at least one), each from a random
      start.
    - ``"paired"``: analogy sentences x1 y1 x2 y2 … of ``images_per_sentence / 2`` pairs matched by
      stem, one task per sentence — photo → edge map (``meta["task"] == "edges"``) or photo →
      grayscale (``"gray"``) — the two tasks' sentences shuffled together; `paired_epochs` passes over
      the pairs, each drawing new company for every pair.
    - ``"sequence"``: runs of consecutive PNG frames (stride 1) from each frame-sequence folder,
      ``n_sequence_frames // images_per_sentence`` runs per folder (at least one).

    A kind whose inputs are too few to fill one sentence (no videos, fewer pairs than shots) gives an
    empty list. Unreadable files are recorded in `skips` (raised when ``strict``).
    """
    check_positive(images_per_sentence=images_per_sentence)
    if images_per_sentence % 2:
        raise ValueError(f"images_per_sentence must be even (x, y pairs), got {images_per_sentence}")
    if split not in corpus:
        raise KeyError(f"split {split!r} not in the corpus (has {[k for k in ('train', 'val') if k in corpus]})")
    files, params = corpus[split], corpus["params"]
    size = params["size"]
    skips = skips if skips is not None else SkipCounter()
    # One sub-seed per builder, so changing one kind's draws leaves the others as they were.
    seeds = random.Random(seed)
    video_seed, sequence_seed, mix_seed = (seeds.getrandbits(32) for _ in range(3))
    task_seeds = {task: seeds.getrandbits(32) for task in PAIRED_TASKS.values()}

    video = list(
        video_sentences(
            files["videos"],
            size,
            n_frames=images_per_sentence,
            strides=(1,),
            rng_seed=video_seed,
            skips=skips,
            strict=strict,
            n_epochs=video_epochs or max(1, params["n_frames"] // images_per_sentence),
        )
    )

    n_shots = images_per_sentence // 2
    paired: list[ImageSentence] = []
    if len(files["images"]) >= n_shots:
        for dir_key, task in PAIRED_TASKS.items():
            for sentence in paired_sentences(
                files["images_dir"],
                files[dir_key],
                size,
                n_shots=n_shots,
                rng_seed=task_seeds[task],
                skips=skips,
                strict=strict,
                n_epochs=paired_epochs,
            ):
                sentence.meta["task"] = task
                paired.append(sentence)
        random.Random(mix_seed).shuffle(paired)

    sequence = list(
        sequence_sentences(
            files["sequences"],
            size,
            n_frames=images_per_sentence,
            max_stride=1,
            rng_seed=sequence_seed,
            skips=skips,
            strict=strict,
            n_epochs=max(1, params["n_sequence_frames"] // images_per_sentence),
        )
    )
    return {"video": video, "paired": paired, "sequence": sequence}

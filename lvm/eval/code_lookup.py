"""The code-lookup baseline of an analogy task: each answer code is the one most often seen at the same place
of a training answer under the same query code.

It is what a model gets that learned nothing but a code-to-code table from the training pairs: no context
beyond one token, no use of the shown examples. An LVM that beats it applies the task with more than a
table; one that falls under it has not learnt even the table. For an edge map that depends on a few pixels
around each patch the table already does well (README, "The first code of an answer"); for the gray task it
keeps too much colour, since a code says little about which of its neighbours carry the hue.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from lvm.data.shards import VisualSentence
from lvm.eval.prompt_quality import FRAME_KINDS, task_of
from lvm.tokenizer.grid import sentence_codes
from lvm.tokenizer.vqgan import VQGANConfig


class CodeLookup:
    """A table code → answer code, fitted on (query codes, answer codes) pairs of one task."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.int64)

    @classmethod
    def fit(cls, queries: np.ndarray, answers: np.ndarray, num_codes: int) -> CodeLookup:
        """`queries`, `answers` (P, n) codes of P training pairs, place by place. A code never seen in a query
        maps to the answers' most frequent code; ties go to the lower code (numpy's argmax)."""
        queries, answers = np.asarray(queries), np.asarray(answers)
        if queries.shape != answers.shape or queries.ndim != 2 or queries.shape[0] == 0:
            raise ValueError(
                f"CodeLookup.fit expects queries and answers of one shape (P, n), P >= 1; got "
                f"{queries.shape} and {answers.shape}"
            )
        for name, codes in (("queries", queries), ("answers", answers)):
            if codes.min() < 0 or codes.max() >= num_codes:
                raise ValueError(
                    f"CodeLookup.fit: {name} range over [{codes.min()}, {codes.max()}], outside the codebook "
                    f"[0, {num_codes})"
                )
        counts = np.zeros((num_codes, num_codes), dtype=np.int64)
        np.add.at(counts, (queries.ravel(), answers.ravel()), 1)
        table = counts.argmax(axis=1)
        table[counts.sum(axis=1) == 0] = np.bincount(answers.ravel(), minlength=num_codes).argmax()
        return cls(table)

    def __call__(self, queries: torch.Tensor) -> torch.Tensor:
        """Query codes (N, n) → answer codes (N, n), int64 on the queries' device."""
        return torch.from_numpy(self.table).to(queries.device)[queries.long()]


def fit_code_lookups(sentences: Iterable[VisualSentence], config: VQGANConfig) -> dict[str, CodeLookup]:
    """One `CodeLookup` per analogy task of the sentences (`task_of`), over the codebook of `config`, from every
    (x, y) pair they hold: images 0, 2, 4, … are the queries, 1, 3, 5, … their answers. Frame runs (video,
    sequence) have none. A sentence whose images are not the tokenizer's size, or that holds a special token,
    is refused by name (`sentence_codes`)."""
    pairs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for sentence in sentences:
        if sentence.kind in FRAME_KINDS:
            continue
        where = f"{sentence.kind} sentence {sentence.key or ', '.join(sentence.source)}"
        images = sentence_codes(sentence.tokens, sentence.n_images, config, where).numpy()
        n_pairs = sentence.n_images // 2
        queries, answers = pairs.setdefault(task_of(sentence.kind, sentence.meta), ([], []))
        queries.append(images[0 : 2 * n_pairs : 2])
        answers.append(images[1 : 2 * n_pairs : 2])
    return {
        task: CodeLookup.fit(np.concatenate(queries), np.concatenate(answers), config.num_embeddings)
        for task, (queries, answers) in pairs.items()
    }

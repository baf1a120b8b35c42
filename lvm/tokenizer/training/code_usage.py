"""How much of the codebook a tokenizer uses: the share of codes picked and the perplexity of their counts,
as a torchmetrics Metric (summed across processes)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def codebook_statistics(counts: torch.Tensor) -> tuple[float, float]:
    """(fraction of codes used at least once, perplexity exp(H) of the usage distribution) from
    per-code counts (K,). The perplexity ranges from 1 (one code) to K (uniform use)."""
    counts = counts.double()
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    usage = float((counts > 0).double().mean())
    probs = counts[counts > 0] / total
    perplexity = float(torch.exp(-(probs * probs.log()).sum()))
    return usage, perplexity


class CodeUsage(Metric):
    """Counts how often each of `num_embeddings` codes appears; summed across processes."""

    full_state_update = False

    def __init__(self, num_embeddings: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_embeddings = num_embeddings
        self.add_state("counts", default=torch.zeros(num_embeddings, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, codes: torch.Tensor) -> None:
        self.counts += torch.bincount(codes.flatten(), minlength=self.num_embeddings)

    def compute(self) -> tuple[float, float]:
        return codebook_statistics(self.counts)

"""k-means for codebook initialisation: k-means++ seeds, then Lloyd steps, on the quantizer's squared
L2 distances."""

from __future__ import annotations

import torch


def _squared_distances(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(N, D) x (K, D) → (N, K) squared L2 distances, as the quantizer computes them."""
    return torch.addmm(
        points.pow(2).sum(1, keepdim=True) + centers.pow(2).sum(1).unsqueeze(0), points, centers.t(), alpha=-2.0
    )


def _kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k-means++ seeding: each next centre is a point drawn with probability ∝ its squared distance
    to the nearest centre so far (plain random seeds often put two centres in one cluster)."""
    n = points.shape[0]
    first = int(torch.randint(0, n, (1,), generator=generator))
    centers = points.new_empty(k, points.shape[1])
    centers[0] = points[first]
    nearest = _squared_distances(points, centers[:1]).squeeze(1).clamp_min(0)
    for i in range(1, k):
        total = nearest.sum()
        weights = nearest / total if total > 0 else torch.ones_like(nearest) / n
        pick = int(torch.multinomial(weights, 1, generator=generator))
        centers[i] = points[pick]
        nearest = torch.minimum(nearest, _squared_distances(points, centers[i : i + 1]).squeeze(1).clamp_min(0))
    return centers


def kmeans(
    points: torch.Tensor, k: int, iterations: int = 10, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k centres (k, D) of points (N, D): k-means++ seeds, then `iterations` Lloyd steps. With
    N < k the seeds are random points repeated with a little noise. A centre that loses all its
    points stays put."""
    n = points.shape[0]
    if n >= k:
        centers = _kmeans_plus_plus(points, k, generator)
    else:
        picks = torch.randint(0, n, (k,), generator=generator).to(points.device)
        noise = torch.randn(k, points.shape[1], generator=generator).to(points.device)
        centers = points[picks] + 0.01 * points.std() * noise  # repeats must not coincide
    for _ in range(iterations):
        assign = _squared_distances(points, centers).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)
        sums = torch.zeros_like(centers).index_add_(0, assign, points)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centers

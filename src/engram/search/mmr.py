"""Maximal marginal relevance: relevant results that do not repeat each other."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mmr"]


def mmr(
    query: np.ndarray[Any, np.dtype[np.float32]],
    candidates: np.ndarray[Any, np.dtype[np.float32]],
    k: int,
    lambda_: float = 0.5,
) -> list[int]:
    """Indices of ``k`` candidates, greedily maximising
    lambda * relevance - (1 - lambda) * redundancy.

    Rows are unit vectors, so dot products are cosine similarities.
    """
    n = candidates.shape[0]
    if n == 0 or k <= 0:
        return []
    relevance = candidates @ query
    chosen: list[int] = [int(np.argmax(relevance))]
    redundancy = candidates @ candidates[chosen[0]]
    while len(chosen) < min(k, n):
        scores = lambda_ * relevance - (1.0 - lambda_) * redundancy
        scores[chosen] = -np.inf
        best = int(np.argmax(scores))
        chosen.append(best)
        redundancy = np.maximum(redundancy, candidates @ candidates[best])
    return chosen

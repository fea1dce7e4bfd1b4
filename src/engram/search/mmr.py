"""Maximal marginal relevance: relevant results that do not repeat each other."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mmr", "mmr_select"]

_F32 = np.ndarray[Any, np.dtype[np.float32]]


def mmr(query: _F32, candidates: _F32, k: int, lambda_: float = 0.5) -> list[int]:
    """MMR with relevance = cosine similarity to the query (rows are unit vectors)."""
    return mmr_select(candidates @ query, candidates, k, lambda_)


def mmr_select(relevance: _F32, candidates: _F32, k: int, lambda_: float = 0.5) -> list[int]:
    """Indices of ``k`` candidates, greedily maximising
    lambda * relevance - (1 - lambda) * redundancy (max cosine to those already chosen).
    """
    n = candidates.shape[0]
    if n == 0 or k <= 0:
        return []
    chosen: list[int] = [int(np.argmax(relevance))]
    redundancy = candidates @ candidates[chosen[0]]
    while len(chosen) < min(k, n):
        scores = lambda_ * relevance - (1.0 - lambda_) * redundancy
        scores[chosen] = -np.inf
        best = int(np.argmax(scores))
        chosen.append(best)
        redundancy = np.maximum(redundancy, candidates @ candidates[best])
    return chosen

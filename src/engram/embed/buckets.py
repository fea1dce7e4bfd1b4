"""Length bucketing: split a batch of token sequences into padded model runs cheaply."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["plan_buckets"]


def plan_buckets(
    lengths: Sequence[int],
    *,
    run_cost: float = 6.0,
    max_rows: int = 64,
    max_tokens: int = 4096,
    parts: int = 1,
) -> list[range]:
    """Split ascending lengths into contiguous runs costing the fewest padded tokens."""
    # run_cost: the fixed price of one model run, in tokens (measured ~5 on MiniLM, 2 cores).
    # max_tokens bounds a run's padded size, hence its activation memory. parts > 1 cuts
    # large runs so that the work can spread over that many threads.
    n = len(lengths)
    if n == 0:
        return []
    sizes = np.asarray(lengths, dtype=np.float64)
    if np.any(sizes[1:] < sizes[:-1]):
        raise ValueError("lengths must be sorted ascending")
    # best[j]: cheapest plan for the first j sequences; the last run of it starts at cut[j].
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        longest = sizes[j - 1]
        rows = max(1, min(max_rows, j, int(max_tokens // longest)))
        starts = np.arange(j - rows, j)
        costs = best[j - rows : j] + run_cost + (j - starts) * longest
        k = int(np.argmin(costs))
        best[j], cut[j] = costs[k], starts[k]
    runs: list[range] = []
    j = n
    while j > 0:
        runs.append(range(int(cut[j]), j))
        j = int(cut[j])
    runs.reverse()
    if parts > 1:
        runs = _spread(runs, sizes, parts)
    return runs


def _spread(runs: list[range], sizes: np.ndarray, parts: int) -> list[range]:
    """Cut runs bigger than half of one thread's share so that the threads finish together."""
    padded = [len(r) * sizes[r[-1]] for r in runs]
    share = sum(padded) / (2 * parts)
    out: list[range] = []
    for run, tokens in zip(runs, padded, strict=True):
        pieces = min(len(run), max(1, math.ceil(tokens / share)))
        step = math.ceil(len(run) / pieces)
        out.extend(range(s, min(s + step, run.stop)) for s in range(run.start, run.stop, step))
    return out

"""Retrieval: hybrid (vector + full-text + graph) search fused by reciprocal rank."""

from engram.search.hybrid import Hit, HybridQuery, Target, hybrid_search, search_in
from engram.search.mmr import mmr, mmr_select
from engram.store.retrieval import Scope

__all__ = [
    "Hit",
    "HybridQuery",
    "Scope",
    "Target",
    "hybrid_search",
    "mmr",
    "mmr_select",
    "search_in",
]

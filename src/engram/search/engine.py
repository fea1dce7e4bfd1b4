"""Message search: embed the query, nearest neighbours in pgvector, optional MMR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.embed.batcher import BatchingEmbedder
from engram.search.mmr import mmr
from engram.store import facts, messages
from engram.store.db import Database

__all__ = ["MessageQuery", "SearchHit", "search_facts", "search_messages"]

_MMR_POOL = 4  # MMR picks from this many times `limit` nearest candidates


@dataclass(frozen=True)
class MessageQuery:
    text: str
    limit: int = 10
    user_id: str | None = None
    session_ids: list[str] | None = None
    min_score: float | None = None
    metadata: dict[str, Any] | None = None
    search_type: str = "similarity"
    mmr_lambda: float = 0.5
    ef_search: int = 64


@dataclass(frozen=True)
class SearchHit:
    item: dict[str, Any]  # a message or a fact row
    score: float


async def search_messages(
    db: Database, embedder: BatchingEmbedder, tenant: str, q: MessageQuery
) -> list[SearchHit]:
    """Messages most similar to the query text, best first, scores in [-1, 1]."""
    vector = (await embedder.embed([q.text]))[0]
    use_mmr = q.search_type == "mmr"
    fetch = q.limit * _MMR_POOL if use_mmr else q.limit
    async with db.tenant(tenant) as conn:
        rows = await messages.vector_search(
            conn,
            vector,
            limit=fetch,
            user_id=q.user_id,
            session_ids=q.session_ids,
            metadata=q.metadata,
            ef_search=q.ef_search,
            with_embedding=use_mmr,
        )
    if use_mmr and rows:
        matrix = np.stack([r.pop("embedding").to_numpy() for r in rows]).astype(np.float32)
        rows = [rows[i] for i in mmr(vector, matrix, q.limit, q.mmr_lambda)]
    hits = [SearchHit(item=r, score=float(r.pop("score"))) for r in rows]
    if q.min_score is not None:
        hits = [h for h in hits if h.score >= q.min_score]
    return hits


async def search_facts(
    db: Database,
    embedder: BatchingEmbedder,
    tenant: str,
    text: str,
    *,
    limit: int,
    user_id: str | None = None,
    session_ids: list[str] | None = None,
    min_score: float | None = None,
    min_rating: float | None = None,
) -> list[SearchHit]:
    """Currently valid facts most similar to the query text, best first."""
    vector = (await embedder.embed([text]))[0]
    async with db.tenant(tenant) as conn:
        rows = await facts.nearest_valid(
            conn, vector, limit=limit, user_id=user_id, session_ids=session_ids,
            min_rating=min_rating,
        )  # fmt: skip
    hits = [SearchHit(item=r, score=float(r.pop("score"))) for r in rows]
    return [h for h in hits if min_score is None or h.score >= min_score]

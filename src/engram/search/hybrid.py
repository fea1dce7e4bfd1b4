"""Hybrid retrieval: vector, full-text and graph candidates fused by reciprocal rank.

For one query the engine gathers, per target (messages, facts, entities), ranked lists:
pgvector nearest neighbours, Postgres full-text matches (websearch syntax, OR-joined
words), and the graph neighbourhood: facts of the entities the query names or the top
candidates mention, breadth-first to depth 2 (facts lead back to the messages they came
from). Each item's fused score is sum(weight / (K + rank)) over the lists it appears in,
normalised so that first place in every list of its target scores 1.0. Optional
recency weighting and MMR diversification follow. Every hit keeps its score parts.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from engram.embed.batcher import BatchingEmbedder
from engram.graph.ingest import normalize_name
from engram.search.mmr import mmr_select
from engram.store import retrieval
from engram.store.db import Conn, Database
from engram.store.retrieval import Scope

__all__ = ["Hit", "HybridQuery", "Target", "hybrid_search", "search_in"]

Target = Literal["messages", "facts", "entities"]
K = 60  # the usual RRF constant: damps the difference between ranks 1 and 2
_WEIGHTS = {"vector": 1.0, "text": 1.0, "graph": 0.8}
_HOP_FANOUT = 10  # facts per hop whose entities are expanded further
# Candidates x results picked (MMR) from which re-ranking runs in a thread: ~0.5 ms of CPU.
_ON_LOOP_WORK = 2_000
_LISTS: dict[str, tuple[str, ...]] = {  # the signals that rank each kind of result
    "message": ("vector", "text", "graph"),
    "fact": ("vector", "text", "graph"),
    "entity": ("vector", "graph"),
}


@dataclass(frozen=True)
class HybridQuery:
    text: str
    # No default: callers pass the configured vector.hnsw_ef_search (or a request's own).
    ef_search: int
    targets: tuple[Target, ...] = ("messages",)
    scope: Scope = field(default_factory=Scope)
    limit: int = 10
    min_score: float | None = None
    mmr_lambda: float | None = None  # None: no diversification
    recency_half_life_days: float | None = None  # None: no recency weighting
    recency_weight: float = 0.3
    ts_config: str = "english"
    candidates: int = 40  # per list
    graph: bool = True
    # The text's embedding when the caller already has one (no model run); unit length.
    vector: NDArray[np.float32] | None = field(default=None, compare=False, repr=False)


@dataclass
class Hit:
    kind: Literal["message", "fact", "entity"]
    item: dict[str, Any]
    score: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)  # signal -> its own score
    ranks: dict[str, int] = field(default_factory=dict)  # signal -> rank in its list

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, str(self.item["uuid"]))


class _Fuser:
    def __init__(self) -> None:
        self.hits: dict[tuple[str, str], Hit] = {}

    def add(self, kind: str, signal: str, rows: list[dict[str, Any]]) -> None:
        for rank, row in enumerate(rows, start=1):
            key = (kind, str(row["uuid"]))
            hit = self.hits.get(key)
            if hit is None:
                hit = self.hits[key] = Hit(kind, row)  # type: ignore[arg-type]
            if signal not in hit.ranks:
                hit.ranks[signal] = rank
                hit.parts[signal] = round(float(row.get("score", 0.0)), 6)

    def fused(self) -> list[Hit]:
        for hit in self.hits.values():
            lists = _LISTS[hit.kind]
            best = sum(_WEIGHTS[s] / (K + 1) for s in lists)
            raw = sum(_WEIGHTS[s] / (K + r) for s, r in hit.ranks.items())
            hit.score = raw / best
        return sorted(self.hits.values(), key=lambda h: h.score, reverse=True)


async def hybrid_search(
    db: Database, embedder: BatchingEmbedder, tenant: str, q: HybridQuery
) -> list[Hit]:
    """The best ``limit`` messages, facts and entities for the query, with score parts."""
    # The query is embedded (in the embedder's thread) while a connection is taken and
    # the full-text queries run.
    embedding = _embedding(embedder, q)
    try:
        async with db.tenant(tenant, pipeline=True) as conn:
            return await _search(conn, tenant, q, embedding)
    finally:
        await _settle(embedding)


async def search_in(
    conn: Conn, embedder: BatchingEmbedder, tenant: str, q: HybridQuery
) -> list[Hit]:
    """`hybrid_search` in the caller's transaction (bound to ``tenant``)."""
    embedding = _embedding(embedder, q)
    try:
        return await _search(conn, tenant, q, embedding)
    finally:
        await _settle(embedding)


def _embedding(embedder: BatchingEmbedder, q: HybridQuery) -> asyncio.Future[NDArray[np.float32]]:
    if q.vector is not None:
        done: asyncio.Future[NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        done.set_result(q.vector[None, :])
        return done
    return asyncio.ensure_future(embedder.embed([q.text]))


async def _settle(embedding: asyncio.Future[NDArray[np.float32]]) -> None:
    if not embedding.done():
        embedding.cancel()
        await asyncio.gather(embedding, return_exceptions=True)


async def _search(
    conn: Conn, tenant: str, q: HybridQuery, embedding: asyncio.Future[NDArray[np.float32]]
) -> list[Hit]:
    fuser = _Fuser()
    # Pipeline mode: the statements of each stage go out together, one round trip each.
    async with conn.pipeline():
        vector = await _gather(conn, tenant, q, embedding, fuser)
    # Fusion and MMR are CPU only: a large re-ranking runs in a thread, so that the event
    # loop goes on serving other requests; a small one costs less than the hop.
    work = len(fuser.hits) * (q.limit if q.mmr_lambda is not None else 1)
    if work >= _ON_LOOP_WORK:
        return await asyncio.to_thread(_rank, fuser, q, vector)
    return _rank(fuser, q, vector)


def _rank(fuser: _Fuser, q: HybridQuery, vector: Any) -> list[Hit]:
    """The fused hits weighed, filtered, diversified and cut to ``limit``."""
    hits = fuser.fused()
    if q.recency_half_life_days:
        _weigh_recency(hits, q.recency_half_life_days, q.recency_weight)
    if q.min_score is not None:
        hits = [h for h in hits if h.score >= q.min_score]
    if q.mmr_lambda is not None and len(hits) > q.limit:
        hits = _diversify(hits[: q.limit * 4], vector, q.limit, q.mmr_lambda)
    hits = hits[: q.limit]
    for h in hits:
        for col in ("embedding", "fact_embedding", "name_embedding", "score", "distance", "depth"):
            h.item.pop(col, None)
    return hits


async def _gather(
    conn: Conn,
    tenant: str,
    q: HybridQuery,
    embedding: asyncio.Future[NDArray[np.float32]],
    fuser: _Fuser,
) -> Any:
    """Fill the fuser; returns the query vector. Full text first: it needs no vector."""
    k, scope = q.candidates, q.scope
    want = set(q.targets)
    vec = q.mmr_lambda is not None  # rows carry their embeddings only for MMR
    facts = "facts" in want
    messages = "messages" in want or q.graph  # the graph starts from the best messages too
    send = retrieval.send
    await send(conn, retrieval.search_settings(max(q.ef_search, k)))
    msg_txt = fact_txt = named = None
    if messages:
        common = await retrieval.common_lexemes(conn, tenant, "messages") if scope.exact else []
        msg_txt = await send(
            conn, retrieval.message_text(q.text, q.ts_config, scope, k, common, with_vectors=vec)
        )
    if facts:
        common = await retrieval.common_lexemes(conn, tenant, "facts") if scope.exact else []
        fact_txt = await send(
            conn, retrieval.fact_text(q.text, q.ts_config, scope, k, common, with_vectors=vec)
        )
    lookup = retrieval.entities_named(normalize_name(q.text), scope) if q.graph else None
    if lookup is not None:
        named = await send(conn, lookup)
    vector = (await embedding)[0]
    msg_vec = fact_vec = ent_vec = None
    if messages:
        msg_vec = await send(conn, retrieval.message_vector(vector, scope, k, with_vectors=vec))
    if facts or q.graph:
        fact_vec = await send(conn, retrieval.fact_vector(vector, scope, k, with_vectors=vec))
    if "entities" in want:
        ent_vec = await send(conn, retrieval.entity_vector(vector, scope, k, with_vectors=vec))
    found = {
        name: await retrieval.rows(cur) if cur is not None else []
        for name, cur in (
            ("msg_txt", msg_txt), ("fact_txt", fact_txt), ("named", named),
            ("msg_vec", msg_vec), ("fact_vec", fact_vec), ("ent_vec", ent_vec),
        )
    }  # fmt: skip
    if "messages" in want:
        fuser.add("message", "vector", found["msg_vec"])
        fuser.add("message", "text", found["msg_txt"])
    if facts:
        fuser.add("fact", "vector", found["fact_vec"])
        fuser.add("fact", "text", found["fact_txt"])
    if "entities" in want:
        fuser.add("entity", "vector", found["ent_vec"])
    if not q.graph:
        return vector
    graph_facts = await _neighbourhood(
        conn, q, vector, [r["uuid"] for r in found["named"]],
        found["msg_vec"][:5] + found["msg_txt"][:5], found["fact_vec"][:5], vec,
    )  # fmt: skip
    if facts:
        fuser.add("fact", "graph", graph_facts)
    cited_cur = near_cur = None
    if "messages" in want:
        # In order, each once, and no more than are looked up: a fact said in thousands
        # of episodes must not make this loop quadratic.
        cited: dict[uuidlib.UUID, None] = {}
        for f in graph_facts:
            for u in f["episodes"]:
                cited[u] = None
            if len(cited) >= k * 2:
                break
        if cited:
            wanted = list(cited)[: k * 2]
            cited_cur = await send(
                conn, retrieval.messages_by_uuid(wanted, vector, scope, with_vectors=vec)
            )
    if "entities" in want:
        near_cur = await send(conn, retrieval.entity_vector(vector, scope, k * 2, with_vectors=vec))
    if cited_cur is not None:
        fuser.add("message", "graph", (await retrieval.rows(cited_cur))[:k])
    if near_cur is not None:
        ids = {f["source_uuid"] for f in graph_facts} | {f["target_uuid"] for f in graph_facts}
        near = await retrieval.rows(near_cur)
        fuser.add("entity", "graph", [r for r in near if r["uuid"] in ids][:k])
    return vector


async def _neighbourhood(
    conn: Conn,
    q: HybridQuery,
    vector: Any,
    named: list[uuidlib.UUID],
    top_messages: list[dict[str, Any]],
    top_facts: list[dict[str, Any]],
    with_vectors: bool,
) -> list[dict[str, Any]]:
    """Facts within two hops of the entities the query names or the top results touch,
    ranked by hop, then by similarity to the query."""
    seeds = set(named)
    for f in top_facts:
        seeds |= {f["source_uuid"], f["target_uuid"]}
    found = await retrieval.rows(
        await retrieval.send(
            conn,
            retrieval.neighbourhood(
                sorted(seeds), [m["uuid"] for m in top_messages], vector, q.scope,
                q.candidates, _HOP_FANOUT, with_vectors=with_vectors,
            ),
        )
    )  # fmt: skip
    seen: dict[str, dict[str, Any]] = {}
    for r in sorted(found, key=lambda r: int(r["depth"])):  # stable: best first per hop
        if str(r["uuid"]) not in seen:
            r["score"] = float(r["score"]) / r["depth"]  # a second hop counts for less
            seen[str(r["uuid"])] = r
    return sorted(seen.values(), key=lambda r: r["score"], reverse=True)[: q.candidates]


def _weigh_recency(hits: list[Hit], half_life_days: float, weight: float) -> None:
    now = datetime.now(UTC)
    for h in hits:
        when = h.item.get("valid_at") or h.item.get("created_at") or now
        age_days = max(0.0, (now - when).total_seconds() / 86400)
        fresh = 0.5 ** (age_days / half_life_days)
        h.parts["recency"] = round(fresh, 6)
        h.score *= (1 - weight) + weight * fresh
    hits.sort(key=lambda h: h.score, reverse=True)


def _diversify(hits: list[Hit], query: Any, k: int, lambda_: float) -> list[Hit]:
    vectors = []
    for h in hits:
        for col in ("embedding", "fact_embedding", "name_embedding"):
            if h.item.get(col) is not None:
                vectors.append(h.item[col].to_numpy())
                break
        else:
            vectors.append(np.zeros_like(query))
    relevance = np.array([h.score for h in hits], dtype=np.float32)
    order = mmr_select(relevance, np.stack(vectors).astype(np.float32), k, lambda_)
    return [hits[i] for i in order]

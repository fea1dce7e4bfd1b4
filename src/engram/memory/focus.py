"""What a session is about now: its latest messages, as a query text and a query vector,
and the search of the user's memory for it."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engram.config import Settings
from engram.embed.batcher import BatchingEmbedder
from engram.search.hybrid import Hit, HybridQuery, Target, search_in
from engram.store import messages
from engram.store.db import Conn
from engram.store.retrieval import Scope

__all__ = ["FOCUS", "FOCUS_CHARS", "focus_text", "focus_vector", "recall"]

FOCUS = 3  # the latest messages that stand for the session's current subject
# The query text's length at most (its end, where the conversation is now): as long as a
# context query may be. Three messages of 64K characters made a query PostgreSQL could
# not hold ("invalid memory alloc request size").
FOCUS_CHARS = 2000
_SPACE = re.compile(r"\s")


def focus_text(latest: list[dict[str, Any]]) -> str:
    """The contents of the last FOCUS of ``latest`` (messages oldest first), joined, and
    of that the last FOCUS_CHARS characters (from the start of a word)."""
    text = " ".join(r["content"] for r in latest[-FOCUS:])
    if len(text) <= FOCUS_CHARS:
        return text
    start = len(text) - FOCUS_CHARS
    tail = text[start:]
    if not text[start - 1].isspace() and (space := _SPACE.search(tail)):
        tail = tail[space.end() :]
    return tail


async def focus_vector(conn: Conn, latest: list[dict[str, Any]]) -> NDArray[np.float32] | None:
    """The same messages as one query vector, from the embeddings stored with them (the
    model does not run): the mean at unit length. On LoCoMo it finds relevant facts as
    well as embedding the joined text does (bench/graph.py --focus-quality)."""
    return await messages.mean_vector(conn, [r["uuid"] for r in latest[-FOCUS:]])


async def recall(
    conn: Conn,
    embedder: BatchingEmbedder,
    tenant: str,
    settings: Settings,
    user_id: str,
    latest: list[dict[str, Any]],
    *,
    targets: tuple[Target, ...],
    limit: int,
    candidates: int = 40,
    query: str | None = None,
) -> list[Hit]:
    """The user's memories most relevant to ``query``, or without one to what the latest
    messages are about (nothing when there is no text to go by)."""
    text = query or focus_text(latest)
    if not text.strip():
        return []
    q = HybridQuery(
        text=text,
        vector=None if query else await focus_vector(conn, latest),
        ef_search=settings.vector.hnsw_ef_search,
        targets=targets,
        scope=Scope(user_ids=[user_id]),
        limit=limit,
        ts_config=settings.text_search_config,
        candidates=candidates,
    )
    return await search_in(conn, embedder, tenant, q)

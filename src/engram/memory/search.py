"""Search over a tenant's memory, revealed as the caller may read it."""

from __future__ import annotations

from engram.crypto import reveal
from engram.crypto.protect import Protector
from engram.embed.batcher import BatchingEmbedder
from engram.errors import NotFoundError
from engram.search.hybrid import Hit, HybridQuery, hybrid_search
from engram.store import users
from engram.store.db import Database

__all__ = ["search"]


async def search(
    db: Database, embedder: BatchingEmbedder, protector: Protector, tenant: str,
    query: HybridQuery, *, user_id: str | None, plaintext: bool,
) -> list[Hit]:  # fmt: skip
    """The hybrid engine's hits for `query`, revealed as the caller may read them.

    `user_id`: the user the search is for (when the caller named one): 404 when unknown."""
    if user_id is not None:
        async with db.tenant(tenant) as conn:
            if not await users.exists(conn, user_id):
                raise NotFoundError("user", user_id)
    hits = await hybrid_search(db, embedder, tenant, query)
    await reveal.hits(protector, tenant, hits, plaintext)
    return hits

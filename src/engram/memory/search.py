"""Search over a tenant's memory, revealed as the caller may read it."""

from __future__ import annotations

from collections.abc import Sequence

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
    query: HybridQuery, *, user_ids: Sequence[str] | None, plaintext: bool,
) -> list[Hit]:  # fmt: skip
    """The hybrid engine's hits for `query`, revealed as the caller may read them.

    `user_ids`: the users the search is for (when the caller named some): 404 for the
    first unknown one."""
    if user_ids:
        async with db.tenant(tenant) as conn:
            for user_id in user_ids:
                if not await users.exists(conn, user_id):
                    raise NotFoundError("user", user_id)
    hits = await hybrid_search(db, embedder, tenant, query)
    await reveal.hits(protector, tenant, hits, plaintext)
    return hits

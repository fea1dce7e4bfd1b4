"""The write flow: embed the episode's messages, then store them in one transaction."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.errors import ForeignKeyViolation

from engram.embed.batcher import BatchingEmbedder
from engram.errors import NotFoundError
from engram.store import episodes, messages, sessions
from engram.store.db import Database

__all__ = ["MessageIn", "add_messages", "estimate_tokens"]

ROLE_TYPES = frozenset({"norole", "system", "assistant", "user", "function", "tool"})


@dataclass(frozen=True)
class MessageIn:
    """One validated message of an episode."""

    content: str
    role_type: str
    role: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    uuid: uuidlib.UUID | None = None


def estimate_tokens(text: str) -> int:
    """Approximate tokens (≈4 characters each for English), never below one."""
    # tiktoken would fetch its vocabulary at run time, which this product must never do.
    return max(1, (len(text) + 3) // 4)


async def add_messages(
    db: Database,
    embedder: BatchingEmbedder,
    tenant: str,
    session_id: str,
    episode: list[MessageIn],
    ts_config: str,
) -> list[uuidlib.UUID]:
    """Store an episode and enqueue its extraction; its messages are searchable at once."""
    async with db.tenant(tenant) as conn:
        session = await sessions.get(conn, session_id)  # 404 before any work
    vectors = await embedder.embed([m.content for m in episode])
    rows = [
        messages.NewMessage(
            uuid=m.uuid or uuidlib.uuid4(),
            role=m.role,
            role_type=m.role_type,
            content=m.content,
            metadata=m.metadata,
            token_count=estimate_tokens(m.content),
            created_at=m.created_at,
            embedding=vectors[i],
        )
        for i, m in enumerate(episode)
    ]
    episode_uuid = uuidlib.uuid4()
    try:
        async with db.tenant(tenant) as conn:
            await messages.insert_many(
                conn, tenant, session_id, session["user_id"], rows, ts_config, episode_uuid
            )
            await episodes.add(
                conn, tenant, episode_uuid, session["user_id"], session_id, [r.uuid for r in rows]
            )
            await sessions.touch(conn, session_id)
    except ForeignKeyViolation as exc:  # the session was deleted while we embedded
        raise NotFoundError("session", session_id) from exc
    return [r.uuid for r in rows]

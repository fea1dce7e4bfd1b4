"""The write flow: embed the episode's messages, then store them in one transaction."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from psycopg.errors import ForeignKeyViolation

from engram.crypto.envelope import FieldContext
from engram.crypto.protect import KeyRef, Protector
from engram.crypto.sensitivity import Sensitivity, combine, from_metadata, stored_class
from engram.embed.batcher import BatchingEmbedder
from engram.errors import NotFoundError
from engram.memory.guard import off_loop
from engram.memory.messages import seal_message_metadata
from engram.store import episodes, keys, messages, sessions
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


@dataclass(frozen=True)
class _Sealed:
    uuid: uuidlib.UUID
    content: str
    embed_text: str
    metadata: dict[str, Any]
    sensitivity: int
    content_enc: bytes | None
    metadata_enc: bytes | None
    metadata_sensitivity: int


def _seal(
    protector: Protector,
    tenant: str,
    user_id: str | None,
    session_level: Sensitivity,
    episode: list[MessageIn],
    key: KeyRef | None = None,
) -> list[_Sealed]:
    """Classify, redact and encrypt each message (blocking: may create or unwrap a key).

    What the message or its session declares is the least class of its content and of
    its metadata values alike."""
    out = []
    if key is None and protector.enabled:
        key = protector.key_ref(tenant, user_id)
    for m in episode:
        uuid = m.uuid or uuidlib.uuid4()
        declared = combine(from_metadata(m.metadata), session_level)
        text = protector.seal_text(
            FieldContext(tenant, "messages", "content", str(uuid)), user_id, m.content, declared,
            key,
        )  # fmt: skip
        meta, meta_level = seal_message_metadata(
            protector, tenant, uuid, user_id, m.metadata, declared, key
        )
        level = max(int(text.sensitivity), meta_level)
        out.append(
            _Sealed(uuid, text.text, text.embed_text, meta.value, level,
                    text.ciphertext, meta.ciphertext, meta_level)
        )  # fmt: skip
    return out


async def add_messages(
    db: Database,
    embedder: BatchingEmbedder,
    protector: Protector,
    tenant: str,
    session_id: str,
    episode: list[MessageIn],
    ts_config: str,
) -> list[uuidlib.UUID]:
    """Store an episode and enqueue its extraction; its messages are searchable at once."""
    for m in episode:
        from_metadata(m.metadata)  # a bad "sensitivity" is refused before anything is stored
    key = None
    async with db.tenant(tenant, pipeline=True) as conn:
        session = await sessions.get(conn, session_id)  # 404 before any work
        if protector.enabled:
            found = await keys.key_id_of(conn, session["user_id"])
            key = protector.key_ref(tenant, session["user_id"], looked_up=True, key_id=found)
    level = stored_class(session["metadata"]) if protector.enabled else Sensitivity.NONE
    seal = partial(_seal, protector, tenant, session["user_id"], level, episode, key)
    sealed = await asyncio.to_thread(seal) if off_loop(protector, key) else seal()
    vectors = await embedder.embed([s.embed_text for s in sealed])
    rows = [
        messages.NewMessage(
            uuid=s.uuid,
            role=m.role,
            role_type=m.role_type,
            content=s.content,
            metadata=s.metadata,
            token_count=estimate_tokens(m.content),
            created_at=m.created_at,
            embedding=vectors[i],
            sensitivity=s.sensitivity,
            content_enc=s.content_enc,
            metadata_enc=s.metadata_enc,
            metadata_sensitivity=s.metadata_sensitivity,
        )
        for i, (m, s) in enumerate(zip(episode, sealed, strict=True))
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

"""Messages' metadata as stored: classified at least as the message's declared class, sealed.

A message's declared ``sensitivity`` (in its own metadata, or its session's) is the least
class of its content and of its metadata values, so ``{"sensitivity": "phi", "diagnosis":
...}`` stores the diagnosis only as ciphertext, its plain value ``[PHI]``. The metadata
has its own class (`metadata_sensitivity`); the message's class is the higher of its
content's and its metadata's. Ciphertexts use the data key of the session's user and
bind the message's uuid.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from engram.config import Settings
from engram.crypto import reveal
from engram.crypto.envelope import FieldContext
from engram.crypto.protect import KeyRef, Protector, SealedMetadata, has_values
from engram.crypto.sensitivity import Sensitivity, combine, from_metadata, stored_class
from engram.embed.batcher import BatchingEmbedder
from engram.errors import ConflictError, ValidationError
from engram.memory.focus import FOCUS, recall
from engram.memory.guard import refuse_unreadable
from engram.memory.page import Page
from engram.search import Hit
from engram.store import messages, sessions
from engram.store.db import Database

__all__ = [
    "SessionMemory",
    "SessionRecall",
    "delete_messages",
    "get_message",
    "list_messages",
    "seal_message_metadata",
    "session_memory",
    "session_recall",
    "update_message",
]

Row = dict[str, Any]


def seal_message_metadata(
    protector: Protector, tenant: str, uuid: uuidlib.UUID, user_id: str | None,
    metadata: dict[str, Any], declared: Sensitivity, key: KeyRef | None = None,
) -> tuple[SealedMetadata, int]:  # fmt: skip
    """How to store a message's metadata, and its class (blocking: may create or unwrap a
    key). With encryption off, metadata with values is not classified (-1), so that the
    first re-encryption run after it is turned on classifies and seals it."""
    ctx = FieldContext(tenant, "messages", "metadata", str(uuid))
    sealed = protector.seal_metadata(ctx, user_id, metadata, declared, key)
    if protector.enabled:
        return sealed, int(sealed.sensitivity)
    return sealed, -1 if has_values(metadata) else 0


def _refuse_new_class(current: dict[str, Any], change: dict[str, Any], uuid: uuidlib.UUID) -> None:
    # The content was classified (and redacted) under the class declared when it was
    # written: a higher one now would leave it short of it, and a lower one would store
    # metadata values in clear that the caller may not be allowed to read.
    if "sensitivity" not in change:
        return
    before, after = stored_class(current), from_metadata(change)
    if after != before:
        raise ValidationError(
            f"message {uuid} was stored with sensitivity {before.label!r}; an update cannot "
            f"change it to {after.label!r}",
            field="metadata.sensitivity",
            hint="leave sensitivity out of the update, or add the message again with the "
            "sensitivity it should have",
        )


def _reseal(
    protector: Protector, tenant: str, row: Row, metadata: dict[str, Any], declared: Sensitivity
) -> tuple[SealedMetadata, int, int]:
    sealed, level = seal_message_metadata(
        protector, tenant, row["uuid"], row["user_id"], metadata, declared
    )
    if not protector.enabled:
        return sealed, level, int(row["sensitivity"])
    content = protector.classify(row["content"], declared).sensitivity
    return sealed, level, max(int(content), level)


async def update_message(
    db: Database,
    protector: Protector,
    tenant: str,
    session_id: str,
    message_uuid: uuidlib.UUID,
    metadata: dict[str, Any],
    *,
    plaintext: bool,
) -> Row:
    """Merge metadata key by key into a message's; its declared class cannot change. The
    row as stored, revealed as the caller may read it (`plaintext`)."""
    from_metadata(metadata)  # a bad "sensitivity" is refused before anything changes
    async with db.tenant(tenant) as conn:
        session = await sessions.get(conn, session_id)
        row = await messages.lock(conn, session_id, message_uuid)
        refuse_unreadable(protector, row, f"message {message_uuid}")
        # Merge into the real metadata, not its redacted form (decrypting needs the key,
        # whoever the caller is: they only see the result as their role allows).
        current = dict(row)
        await reveal.messages(protector, tenant, [current], True)
        _refuse_new_class(current["metadata"], metadata, message_uuid)
        merged = {**current["metadata"], **metadata}
        declared = combine(stored_class(merged), stored_class(session["metadata"]))
        args = (protector, tenant, current, merged, declared)
        sealed, level, overall = (
            await asyncio.to_thread(_reseal, *args) if protector.enabled else _reseal(*args)
        )
        updated = await messages.update_metadata(
            conn, session_id, message_uuid, sealed.value, sealed.ciphertext,
            metadata_sensitivity=level, sensitivity=overall,
        )  # fmt: skip
    await reveal.messages(protector, tenant, [updated], plaintext)
    return updated


@dataclass(frozen=True, slots=True)
class SessionMemory:
    """A session's memory: the session, its latest messages (oldest first), and the facts
    of its user relevant to those (all revealed as the caller may read them)."""

    session: Row
    messages: list[Row]
    relevant_facts: list[Row]


async def session_memory(
    db: Database, embedder: BatchingEmbedder, protector: Protector, tenant: str,
    settings: Settings, session_id: str, *, last: int, min_rating: float | None,
    plaintext: bool,
) -> SessionMemory:  # fmt: skip
    """The session (404 for an unknown one), its `last` messages, and up to
    settings.relevant_facts facts of its user relevant to them, rated at least `min_rating`
    (a fact without a rating counts as 1)."""
    relevant: list[Row] = []
    # One transaction, its statements pipelined: the session, its latest messages, and
    # the facts relevant to those.
    async with db.tenant(tenant, pipeline=True) as conn:
        session = await sessions.get(conn, session_id)
        rows = await messages.last_n(conn, session_id, last)
        if session["user_id"] is not None and settings.relevant_facts:
            hits = await recall(
                conn, embedder, tenant, settings, session["user_id"], rows, targets=("facts",),
                limit=settings.relevant_facts, candidates=max(20, settings.relevant_facts),
            )  # fmt: skip
            relevant = [
                h.item for h in hits
                if min_rating is None or (h.item.get("rating") or 1) >= min_rating
            ]  # fmt: skip
    await reveal.messages(protector, tenant, rows, plaintext)
    await reveal.facts(protector, tenant, relevant, plaintext)
    await reveal.sessions(protector, tenant, [session], plaintext)
    return SessionMemory(session, rows, relevant)


@dataclass(frozen=True, slots=True)
class SessionRecall:
    """What a session's user remembers relevant to the session now: the uuids of the
    session's latest messages (oldest first) and the hits (revealed as the caller may
    read them)."""

    latest: list[uuidlib.UUID]
    hits: list[Hit]


async def session_recall(
    db: Database, embedder: BatchingEmbedder, protector: Protector, tenant: str,
    settings: Settings, session_id: str, *, recent: int, query: str | None, plaintext: bool,
) -> SessionRecall:  # fmt: skip
    """The session's (404 for an unknown one, 409 for one without a user) latest
    max(`recent`, FOCUS) messages, and up to 50 facts and messages of its user relevant
    to them (or to `query`)."""
    async with db.tenant(tenant, pipeline=True) as conn:
        session = await sessions.get(conn, session_id)
        if session["user_id"] is None:
            raise ConflictError(
                f"session {session_id!r} has no user, so it has no memory beyond itself",
                hint="create sessions with a user_id",
            )
        latest = await messages.last_n(conn, session_id, max(recent, FOCUS))
        hits = await recall(
            conn, embedder, tenant, settings, session["user_id"], latest,
            targets=("facts", "messages"), limit=50, query=query,
        )  # fmt: skip
    await reveal.hits(protector, tenant, hits, plaintext)
    return SessionRecall([m["uuid"] for m in latest], hits)


async def delete_messages(db: Database, tenant: str, session_id: str) -> None:
    """Delete a session's messages (404 for an unknown session); the session stays."""
    async with db.tenant(tenant) as conn:
        await sessions.get(conn, session_id)
        await messages.delete_for_session(conn, session_id)


async def list_messages(
    db: Database, protector: Protector, tenant: str, session_id: str, *, offset: int,
    limit: int, plaintext: bool,
) -> Page:  # fmt: skip
    """A page of a session's messages (404 for an unknown session), and how many it has."""
    async with db.tenant(tenant) as conn:
        await sessions.get(conn, session_id)
        rows = await messages.list_for_session(conn, session_id, offset=offset, limit=limit)
        total = await messages.count_for_session(conn, session_id)
    await reveal.messages(protector, tenant, rows, plaintext)
    return Page(rows, total)


async def get_message(
    db: Database, protector: Protector, tenant: str, session_id: str,
    message_uuid: uuidlib.UUID, *, plaintext: bool,
) -> Row:  # fmt: skip
    """One message of a session (404 for an unknown session or message), revealed as the
    caller may read it."""
    async with db.tenant(tenant) as conn:
        await sessions.get(conn, session_id)
        row = await messages.get(conn, session_id, message_uuid)
    await reveal.messages(protector, tenant, [row], plaintext)
    return row

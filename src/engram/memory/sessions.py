"""Sessions as stored: metadata classified, redacted and sealed on write.

A session's own ``{"sensitivity": ...}`` is the least class of its metadata values (and
of its messages, see the writer). Ciphertexts use the data key of the session's user (the
tenant's key for a session without one) and bind the row's uuid, chosen here.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from functools import partial
from typing import Any

from engram.crypto import reveal
from engram.crypto.envelope import FieldContext
from engram.crypto.protect import KeyRef, Protector, SealedMetadata
from engram.crypto.sensitivity import Sensitivity, from_metadata, stored_class
from engram.errors import NotFoundError, ValidationError
from engram.memory.guard import off_loop, refuse_unreadable
from engram.memory.page import Page
from engram.store import keys, sessions, users
from engram.store.db import Database
from engram.store.sessions import OrderBy

__all__ = [
    "OrderBy",
    "add_session",
    "get_session",
    "list_sessions",
    "seal_session",
    "update_session",
]

Row = dict[str, Any]


def seal_session(
    protector: Protector, tenant: str, uuid: uuidlib.UUID, user_id: str | None,
    metadata: dict[str, Any], declared: Sensitivity, key: KeyRef | None = None,
) -> tuple[SealedMetadata, int]:  # fmt: skip
    """How to store a session's metadata, and its class (-1, not classified, with
    encryption off; blocking: may create or unwrap a key)."""
    ctx = FieldContext(tenant, "sessions", "metadata", str(uuid))
    sealed = protector.seal_metadata(ctx, user_id, metadata, declared, key)
    return sealed, int(sealed.sensitivity) if protector.enabled else -1


async def _seal(
    protector: Protector, tenant: str, uuid: uuidlib.UUID, user_id: str | None,
    metadata: dict[str, Any], key: KeyRef | None = None,
) -> tuple[SealedMetadata, int]:  # fmt: skip
    declared = from_metadata(metadata)
    seal = partial(seal_session, protector, tenant, uuid, user_id, metadata, declared, key)
    return await asyncio.to_thread(seal) if metadata and off_loop(protector, key) else seal()


async def add_session(
    db: Database,
    protector: Protector,
    tenant: str,
    session_id: str,
    user_id: str | None,
    metadata: dict[str, Any] | None,
    fact_rating_instruction: dict[str, Any] | None,
    *,
    plaintext: bool,
) -> Row:
    """Store a new session of `user_id` (404 for an unknown user); the row as stored,
    revealed as the caller may read it (`plaintext`)."""
    from_metadata(metadata)  # a bad "sensitivity" is refused before anything is stored
    key = None
    async with db.tenant(tenant, pipeline=True) as conn:  # one round trip for the checks
        known = await users.send_exists(conn, user_id) if user_id is not None else None
        taken = await sessions.send_exists(conn, session_id)
        found = await keys.send_key_id_of(conn, user_id) if protector.enabled and metadata else None
        if user_id is not None and known is not None and not await known.result():
            raise NotFoundError("user", user_id)
        if await taken.result():  # 409 before any key work
            raise sessions.conflict(session_id)
        if found is not None:
            key_id = await found.result()
            key = protector.key_ref(tenant, user_id, looked_up=True, key_id=key_id)
    uuid = uuidlib.uuid4()
    sealed, level = await _seal(protector, tenant, uuid, user_id, metadata or {}, key)
    async with db.tenant(tenant) as conn:
        row = await sessions.add(
            conn, tenant, session_id, uuid, user_id, sealed.value, fact_rating_instruction,
            metadata_sensitivity=level, metadata_enc=sealed.ciphertext,
        )  # fmt: skip
    await reveal.sessions(protector, tenant, [row], plaintext)
    return row


def _refuse_lower_class(current: dict[str, Any], change: dict[str, Any], session_id: str) -> None:
    # Lowering the class would store values in clear that were protected, and a caller
    # not allowed to read them would then read them back. Raising it protects more.
    if "sensitivity" not in change:
        return
    before, after = stored_class(current), from_metadata(change)
    if after < before:
        raise ValidationError(
            f"session {session_id!r} is declared {before.label!r}; an update cannot lower "
            f"it to {after.label!r}",
            field="metadata.sensitivity",
            hint="leave sensitivity out of the update or raise it; to store the values at a "
            "lower class, start a new session",
        )


async def update_session(
    db: Database,
    protector: Protector,
    tenant: str,
    session_id: str,
    metadata: dict[str, Any] | None,
    fact_rating_instruction: dict[str, Any] | None,
    *,
    plaintext: bool,
) -> Row:
    """Merge metadata key by key and replace the fact rating instruction when given; the
    row as stored, revealed as the caller may read it."""
    from_metadata(metadata)
    async with db.tenant(tenant) as conn:
        row = await sessions.lock(conn, session_id)
        refuse_unreadable(protector, row, f"session {session_id!r}")
        current = dict(row)
        await reveal.sessions(protector, tenant, [current], True)
        _refuse_lower_class(current["metadata"], metadata or {}, session_id)
        merged = {**current["metadata"], **(metadata or {})}
        sealed, level = await _seal(protector, tenant, row["uuid"], row["user_id"], merged)
        updated = await sessions.update(
            conn, session_id, sealed.value, fact_rating_instruction,
            metadata_sensitivity=level, metadata_enc=sealed.ciphertext,
        )  # fmt: skip
    await reveal.sessions(protector, tenant, [updated], plaintext)
    return updated


async def get_session(
    db: Database, protector: Protector, tenant: str, session_id: str, *, plaintext: bool
) -> Row:
    """One session (404 for an unknown one), revealed as the caller may read it."""
    async with db.tenant(tenant) as conn:
        row = await sessions.get(conn, session_id)
    await reveal.sessions(protector, tenant, [row], plaintext)
    return row


async def list_sessions(
    db: Database, protector: Protector, tenant: str, *, offset: int, limit: int,
    order_by: OrderBy, ascending: bool, plaintext: bool,
) -> Page:  # fmt: skip
    """A page of the tenant's sessions in the order asked, and how many there are."""
    async with db.tenant(tenant) as conn:
        rows = await sessions.list_ordered(
            conn, offset=offset, limit=limit, order_by=order_by, ascending=ascending
        )
        total = await sessions.count(conn)
    await reveal.sessions(protector, tenant, rows, plaintext)
    return Page(rows, total)

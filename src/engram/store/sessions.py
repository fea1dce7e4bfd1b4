"""Sessions: one conversation of one user.

With field-level encryption, `metadata` holds the redacted object when any value is
protected, and `metadata_enc` the whole object's ciphertext (bound to the row's uuid).
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, Literal

from psycopg import sql
from psycopg.errors import ForeignKeyViolation, UniqueViolation

from engram.errors import ConflictError, NotFoundError
from engram.store.db import Conn, Pending
from engram.store.jsonb import jsonb

__all__ = ["add", "conflict", "count", "get", "list_for_user", "list_ordered", "lock",
           "send_exists", "touch", "update"]  # fmt: skip

_COLUMNS = sql.SQL("""session_id, id, uuid, user_id, metadata, fact_rating_instruction,
    created_at, updated_at, ended_at, metadata_sensitivity, metadata_enc""")

OrderBy = Literal["created_at", "updated_at", "user_id", "session_id", "id"]


async def add(
    conn: Conn,
    tenant: str,
    session_id: str,
    uuid: uuidlib.UUID,
    user_id: str | None,
    metadata: dict[str, Any] | None,
    fact_rating_instruction: dict[str, Any] | None,
    *,
    metadata_sensitivity: int = 0,
    metadata_enc: bytes | None = None,
) -> dict[str, Any]:
    """Insert a session whose metadata ciphertext (if any) was bound to `uuid`."""
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO sessions (tenant_id, session_id, uuid, user_id, metadata,
                                         fact_rating_instruction, metadata_sensitivity,
                                         metadata_enc)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    tenant,
                    session_id,
                    uuid,
                    user_id,
                    jsonb(metadata or {}),
                    jsonb(fact_rating_instruction) if fact_rating_instruction else None,
                    metadata_sensitivity,
                    metadata_enc,
                ),
            )
    except UniqueViolation as exc:
        raise conflict(session_id) from exc
    except ForeignKeyViolation as exc:  # the user was deleted meanwhile
        raise NotFoundError("user", str(user_id)) from exc
    return await get(conn, session_id)


def conflict(session_id: str) -> ConflictError:
    """The error for a session id that is taken."""
    return ConflictError(
        f"session {session_id!r} already exists",
        field="session_id",
        hint="use another session_id, or update the existing session",
    )


async def send_exists(conn: Conn, session_id: str) -> Pending[bool]:
    """Whether the session exists, sent now and read later (see `Pending`)."""
    cur = await conn.execute("SELECT 1 FROM sessions WHERE session_id = %s", (session_id,))
    return Pending(cur, lambda row: row is not None)


async def get(conn: Conn, session_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM sessions WHERE session_id = %s").format(_COLUMNS), (session_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("session", session_id)
    return row


async def lock(conn: Conn, session_id: str) -> dict[str, Any]:
    """The session, locked until the transaction ends (for a read-modify-write)."""
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM sessions WHERE session_id = %s FOR UPDATE").format(_COLUMNS),
        (session_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("session", session_id)
    return row


async def update(
    conn: Conn,
    session_id: str,
    metadata: dict[str, Any],
    fact_rating_instruction: dict[str, Any] | None,
    *,
    metadata_sensitivity: int = 0,
    metadata_enc: bytes | None = None,
) -> dict[str, Any]:
    """Replace the metadata (the caller merged it) and its ciphertext, and the fact
    rating instruction when given."""
    cur = await conn.execute(
        """UPDATE sessions SET
               metadata = %s, metadata_sensitivity = %s, metadata_enc = %s,
               fact_rating_instruction = coalesce(%s, fact_rating_instruction),
               updated_at = now()
           WHERE session_id = %s RETURNING session_id""",
        (
            jsonb(metadata),
            metadata_sensitivity,
            metadata_enc,
            jsonb(fact_rating_instruction) if fact_rating_instruction else None,
            session_id,
        ),
    )
    if await cur.fetchone() is None:
        raise NotFoundError("session", session_id)
    return await get(conn, session_id)


async def touch(conn: Conn, session_id: str) -> None:
    await conn.execute(
        "UPDATE sessions SET updated_at = now() WHERE session_id = %s", (session_id,)
    )


async def list_for_user(conn: Conn, user_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM sessions WHERE user_id = %s ORDER BY id").format(_COLUMNS),
        (user_id,),
    )
    return await cur.fetchall()


async def list_ordered(
    conn: Conn, *, offset: int, limit: int, order_by: OrderBy, ascending: bool
) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT {} FROM sessions ORDER BY {} {}, id {} LIMIT %s OFFSET %s").format(
        _COLUMNS,
        sql.Identifier(order_by),
        sql.SQL("ASC" if ascending else "DESC"),
        sql.SQL("ASC" if ascending else "DESC"),
    )
    cur = await conn.execute(query, (limit, offset))
    return await cur.fetchall()


async def count(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM sessions")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0

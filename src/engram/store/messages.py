"""Messages: the turns of a session, with their embedding and full-text vector."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.errors import UniqueViolation

from engram.errors import ConflictError, NotFoundError
from engram.store.db import Conn
from engram.store.jsonb import jsonb

__all__ = [
    "NewMessage",
    "count_for_session",
    "delete_for_session",
    "get",
    "insert_many",
    "last_n",
    "list_for_session",
    "lock",
    "mean_vector",
    "update_metadata",
]

_COLUMNS = sql.SQL("""uuid, session_id, user_id, role, role_type, content, metadata, token_count,
    created_at, updated_at, sensitivity, content_enc, metadata_enc""")


@dataclass(frozen=True)
class NewMessage:
    uuid: uuidlib.UUID
    role: str
    role_type: str
    content: str
    metadata: dict[str, Any]
    token_count: int
    created_at: datetime | None
    embedding: np.ndarray[Any, np.dtype[np.float32]]
    # Field-level encryption: `content` and `metadata` are then the redacted forms.
    # `sensitivity` is the message's class (content and metadata), `metadata_sensitivity`
    # its metadata's (-1: not classified).
    sensitivity: int = 0
    content_enc: bytes | None = None
    metadata_enc: bytes | None = None
    metadata_sensitivity: int = 0


async def insert_many(
    conn: Conn,
    tenant: str,
    session_id: str,
    user_id: str | None,
    messages: list[NewMessage],
    ts_config: str,
    episode: uuidlib.UUID | None = None,
) -> None:
    """Insert messages in order; created_at defaults to the transaction time. A uuid the
    tenant already has (or one given twice) is a ConflictError."""
    given = [m.uuid for m in messages]
    if len(set(given)) < len(given):
        raise ConflictError(
            "two messages of the request have the same uuid",
            field="messages.uuid",
            hint="give each message its own uuid, or leave uuid out",
        )
    try:
        async with conn.cursor() as cur:
            await cur.executemany(
                """INSERT INTO messages (tenant_id, uuid, session_id, user_id, role, role_type,
                       content, metadata, token_count, created_at, embedding, search_text,
                       episode_uuid, sensitivity, content_enc, metadata_enc, metadata_sensitivity)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), %s,
                           to_tsvector(%s::regconfig, %s), %s, %s, %s, %s, %s)""",
                [
                    (
                        tenant,
                        m.uuid,
                        session_id,
                        user_id,
                        m.role,
                        m.role_type,
                        m.content,
                        jsonb(m.metadata),
                        m.token_count,
                        m.created_at,
                        m.embedding,
                        ts_config,
                        m.content,
                        episode,
                        m.sensitivity,
                        m.content_enc,
                        m.metadata_enc,
                        m.metadata_sensitivity,
                    )
                    for m in messages
                ],
            )
    except UniqueViolation as exc:
        raise ConflictError(
            "a message with one of these uuids already exists",
            field="messages.uuid",
            hint="leave uuid out to have one assigned, or use a new one",
        ) from exc


async def get(conn: Conn, session_id: str, message_uuid: uuidlib.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM messages WHERE session_id = %s AND uuid = %s").format(_COLUMNS),
        (session_id, message_uuid),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("message", str(message_uuid))
    return row


async def lock(conn: Conn, session_id: str, message_uuid: uuidlib.UUID) -> dict[str, Any]:
    """The message, locked until the transaction ends (for a read-modify-write)."""
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM messages WHERE session_id = %s AND uuid = %s FOR UPDATE").format(
            _COLUMNS
        ),
        (session_id, message_uuid),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("message", str(message_uuid))
    return row


async def update_metadata(
    conn: Conn,
    session_id: str,
    message_uuid: uuidlib.UUID,
    metadata: dict[str, Any],
    metadata_enc: bytes | None,
    *,
    metadata_sensitivity: int,
    sensitivity: int,
) -> dict[str, Any]:
    """Replace the metadata (the caller merged it), its ciphertext and class, and the
    message's class."""
    cur = await conn.execute(
        """UPDATE messages SET metadata = %s, metadata_enc = %s, metadata_sensitivity = %s,
                  sensitivity = %s, updated_at = now()
           WHERE session_id = %s AND uuid = %s RETURNING uuid""",
        (jsonb(metadata), metadata_enc, metadata_sensitivity, sensitivity, session_id,
         message_uuid),
    )  # fmt: skip
    if await cur.fetchone() is None:
        raise NotFoundError("message", str(message_uuid))
    return await get(conn, session_id, message_uuid)


async def list_for_session(
    conn: Conn, session_id: str, *, offset: int, limit: int
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT {} FROM messages WHERE session_id = %s ORDER BY seq LIMIT %s OFFSET %s"
        ).format(_COLUMNS),
        (session_id, limit, offset),
    )
    return await cur.fetchall()


async def last_n(conn: Conn, session_id: str, n: int) -> list[dict[str, Any]]:
    """The latest n messages of a session, oldest first."""
    cur = await conn.execute(
        sql.SQL(
            """SELECT * FROM (SELECT {}, seq FROM messages WHERE session_id = %s
                              ORDER BY seq DESC LIMIT %s) t ORDER BY seq"""
        ).format(_COLUMNS),
        (session_id, n),
    )
    return await cur.fetchall()


async def mean_vector(
    conn: Conn, uuids: list[uuidlib.UUID]
) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    """The mean of the stored embeddings of the given messages, at unit length: what they
    are about together, without running the model (None: none of them is there)."""
    cur = await conn.execute(
        "SELECT l2_normalize(avg(embedding)) AS v FROM messages WHERE uuid = ANY(%s)",
        (uuids,),
        binary=True,
    )
    row = await cur.fetchone()
    if row is None or row["v"] is None:
        return None
    return np.asarray(row["v"].to_numpy(), dtype=np.float32)


async def count_for_session(conn: Conn, session_id: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM messages WHERE session_id = %s", (session_id,)
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def delete_for_session(conn: Conn, session_id: str) -> int:
    cur = await conn.execute("DELETE FROM messages WHERE session_id = %s", (session_id,))
    return cur.rowcount

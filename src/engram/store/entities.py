"""Entities of a user's graph: people, places, organisations, things."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import numpy as np

from engram.errors import NotFoundError
from engram.store.db import Conn

__all__ = ["add_episode", "find_by_name", "get", "insert", "many", "mention", "nearest"]

_VEC = np.ndarray[Any, np.dtype[np.float32]]


async def find_by_name(conn: Conn, user_id: str, normalized: str) -> dict[str, Any] | None:
    """The entity whose normalised name or one of whose aliases is ``normalized``."""
    cur = await conn.execute(
        """SELECT uuid, name, labels, aliases FROM entities
           WHERE user_id = %s AND (normalized_name = %s OR aliases @> ARRAY[%s])
           ORDER BY normalized_name = %s DESC LIMIT 1""",
        (user_id, normalized, normalized, normalized),
    )
    return await cur.fetchone()


async def nearest(conn: Conn, user_id: str, vector: _VEC) -> dict[str, Any] | None:
    """The entity of this user whose name embedding is closest, with ``score``."""
    cur = await conn.execute(
        """WITH scope AS MATERIALIZED (
               SELECT uuid, name, labels, aliases, name_embedding FROM entities
               WHERE user_id = %s)
           SELECT uuid, name, labels, aliases, 1 - (name_embedding <=> %s) AS score
           FROM scope ORDER BY name_embedding <=> %s LIMIT 1""",
        (user_id, vector, vector),
    )
    return await cur.fetchone()


async def insert(
    conn: Conn,
    tenant: str,
    user_id: str,
    name: str,
    normalized: str,
    label: str,
    summary: str | None,
    vector: _VEC,
    message: uuidlib.UUID,
    *,
    uuid: uuidlib.UUID | None = None,
    summary_enc: bytes | None = None,
) -> uuidlib.UUID:
    """Insert an entity; `summary` is its redacted form when `summary_enc` is set."""
    cur = await conn.execute(
        """INSERT INTO entities (uuid, tenant_id, user_id, name, normalized_name, labels,
                                 summary, summary_enc, name_embedding)
           VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s, %s, ARRAY[%s], %s, %s, %s)
           ON CONFLICT (tenant_id, user_id, normalized_name) DO NOTHING
           RETURNING uuid""",
        (uuid, tenant, user_id, name, normalized, label, summary, summary_enc, vector),
    )
    row = await cur.fetchone()
    if row is None:  # already there (same normalised name): use it, rewrite nothing
        cur = await conn.execute(
            "SELECT uuid FROM entities WHERE user_id = %s AND normalized_name = %s",
            (user_id, normalized),
        )
        row = await cur.fetchone()
    assert row is not None
    entity = uuidlib.UUID(str(row["uuid"]))
    await mention(conn, tenant, entity, message)
    return entity


async def mention(conn: Conn, tenant: str, entity: uuidlib.UUID, message: uuidlib.UUID) -> None:
    """Record that a message mentions the entity (idempotent, append-only)."""
    await conn.execute(
        """INSERT INTO entity_mentions (tenant_id, entity_uuid, message_uuid)
           VALUES (%s, %s, %s) ON CONFLICT DO NOTHING""",
        (tenant, entity, message),
    )


async def add_episode(
    conn: Conn,
    tenant: str,
    entity: uuidlib.UUID,
    message: uuidlib.UUID,
    alias: str | None,
    label: str,
) -> None:
    """Record a mention, and a new alias or label (the row is rewritten only then)."""
    await mention(conn, tenant, entity, message)
    await conn.execute(
        """UPDATE entities SET
               aliases = CASE WHEN %(alias)s::text IS NULL OR aliases @> ARRAY[%(alias)s]
                                   OR normalized_name = %(alias)s THEN aliases
                              ELSE array_append(aliases, %(alias)s) END,
               labels = CASE WHEN labels @> ARRAY[%(label)s] THEN labels
                             ELSE array_append(labels, %(label)s) END,
               updated_at = now()
           WHERE uuid = %(e)s
             AND NOT (labels @> ARRAY[%(label)s]
                      AND (%(alias)s::text IS NULL OR aliases @> ARRAY[%(alias)s]
                           OR normalized_name = %(alias)s))""",
        {"alias": alias, "label": label, "e": entity},
    )


async def get(conn: Conn, user_id: str, entity: uuidlib.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        """SELECT uuid, user_id, name, labels, aliases, summary, summary_enc, created_at,
                  updated_at
           FROM entities WHERE user_id = %s AND uuid = %s""",
        (user_id, entity),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("entity", str(entity))
    return row


async def many(conn: Conn, uuids: list[uuidlib.UUID]) -> list[dict[str, Any]]:
    cur = await conn.execute(
        """SELECT uuid, user_id, name, labels, aliases, summary, summary_enc, created_at,
                  updated_at
           FROM entities WHERE uuid = ANY(%s) ORDER BY name""",
        (uuids,),
    )
    return await cur.fetchall()

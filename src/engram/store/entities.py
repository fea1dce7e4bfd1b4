"""Entities of a user's graph: people, places, organisations, things."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.errors import NotFoundError
from engram.store.db import Conn

__all__ = [
    "NewEntity",
    "add_episode",
    "add_episodes",
    "find_by_name",
    "find_by_names",
    "get",
    "insert",
    "insert_many",
    "many",
    "mention",
    "mention_many",
    "nearest",
    "nearest_many",
    "sealed_names",
]

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


async def find_by_names(conn: Conn, user_id: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """For each normalised name, the entity find_by_name would return (absent: none)."""
    if not keys:
        return {}
    cur = await conn.execute(
        """SELECT DISTINCT ON (k.key) k.key, e.uuid, e.normalized_name, e.labels, e.aliases
           FROM unnest(%s::text[]) AS k(key)
           JOIN entities e ON e.user_id = %s AND e.name_enc IS NULL
                          AND (e.normalized_name = k.key OR e.aliases @> ARRAY[k.key])
           ORDER BY k.key, e.normalized_name = k.key DESC""",
        (keys, user_id),
    )
    return {r["key"]: r for r in await cur.fetchall()}


async def sealed_names(conn: Conn, user_id: str) -> list[dict[str, Any]]:
    """The user's entities whose name is sealed, with its ciphertext (to open and match:
    their stored normalised names are keys of their own, see migration 0019)."""
    cur = await conn.execute(
        """SELECT uuid, name_enc, labels, aliases FROM entities
           WHERE user_id = %s AND name_enc IS NOT NULL""",
        (user_id,),
    )
    return await cur.fetchall()


async def nearest_many(
    conn: Conn, user_id: str, vectors: list[_VEC]
) -> list[dict[str, Any] | None]:
    """For each vector, the entity nearest() would return (one scan of the user's rows);
    an entity whose name is sealed is never matched by its name's embedding."""
    if not vectors:
        return []
    # %b: an array of vectors as text is formatted float by float in Python (~1 ms each).
    cur = await conn.execute(
        """WITH scope AS MATERIALIZED (
               SELECT uuid, normalized_name, labels, aliases, name_embedding FROM entities
               WHERE user_id = %s AND name_enc IS NULL)
           SELECT q.i, n.* FROM unnest(%b::vector[]) WITH ORDINALITY AS q(v, i)
           CROSS JOIN LATERAL (
               SELECT uuid, normalized_name, labels, aliases,
                      1 - (name_embedding <=> q.v) AS score
               FROM scope ORDER BY name_embedding <=> q.v LIMIT 1) n""",
        (user_id, vectors),
        binary=True,
    )
    found: list[dict[str, Any] | None] = [None] * len(vectors)
    for r in await cur.fetchall():
        found[int(r.pop("i")) - 1] = r
    return found


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


@dataclass(frozen=True, slots=True)
class NewEntity:
    uuid: uuidlib.UUID
    name: str
    normalized: str
    label: str
    summary: str | None  # the redacted form when summary_enc is set
    summary_enc: bytes | None
    vector: _VEC
    name_enc: bytes | None = None  # the sealed name (`name` is then its class marker)


async def insert_many(conn: Conn, tenant: str, user_id: str, rows: list[NewEntity]) -> None:
    """Insert entities in one statement. A name stored meanwhile by someone else is a
    unique violation: the job fails and its retry finds that entity."""
    if not rows:
        return
    await conn.execute(
        """INSERT INTO entities (uuid, tenant_id, user_id, name, normalized_name, labels,
                                 summary, summary_enc, name_embedding, name_enc)
           SELECT r.uuid, %s, %s, r.name, r.normalized, ARRAY[r.label], r.summary,
                  r.summary_enc, r.v, r.name_enc
           FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[],
                       %s::bytea[], %b::vector[], %s::bytea[])
                AS r(uuid, name, normalized, label, summary, summary_enc, v, name_enc)""",
        (
            tenant,
            user_id,
            [r.uuid for r in rows],
            [r.name for r in rows],
            [r.normalized for r in rows],
            [r.label for r in rows],
            [r.summary for r in rows],
            [r.summary_enc for r in rows],
            [r.vector for r in rows],
            [r.name_enc for r in rows],
        ),
    )


async def mention_many(
    conn: Conn, tenant: str, pairs: list[tuple[uuidlib.UUID, uuidlib.UUID]]
) -> None:
    """Record (entity, message) mentions in one statement (idempotent, append-only)."""
    if not pairs:
        return
    await conn.execute(
        """INSERT INTO entity_mentions (tenant_id, entity_uuid, message_uuid)
           SELECT %s, e, m FROM unnest(%s::uuid[], %s::uuid[]) AS p(e, m)
           ON CONFLICT DO NOTHING""",
        (tenant, [e for e, _ in pairs], [m for _, m in pairs]),
    )


async def mention(conn: Conn, tenant: str, entity: uuidlib.UUID, message: uuidlib.UUID) -> None:
    """Record that a message mentions the entity (idempotent, append-only)."""
    await conn.execute(
        """INSERT INTO entity_mentions (tenant_id, entity_uuid, message_uuid)
           VALUES (%s, %s, %s) ON CONFLICT DO NOTHING""",
        (tenant, entity, message),
    )


_ADD_ALIAS_LABEL = """UPDATE entities SET
       aliases = CASE WHEN %(alias)s::text IS NULL OR aliases @> ARRAY[%(alias)s]
                           OR normalized_name = %(alias)s THEN aliases
                      ELSE array_append(aliases, %(alias)s) END,
       labels = CASE WHEN labels @> ARRAY[%(label)s] THEN labels
                     ELSE array_append(labels, %(label)s) END,
       updated_at = now()
   WHERE uuid = %(e)s
     AND NOT (labels @> ARRAY[%(label)s]
              AND (%(alias)s::text IS NULL OR aliases @> ARRAY[%(alias)s]
                   OR normalized_name = %(alias)s))"""


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
    await conn.execute(_ADD_ALIAS_LABEL, {"alias": alias, "label": label, "e": entity})


async def add_episodes(conn: Conn, changes: list[tuple[uuidlib.UUID, str | None, str]]) -> None:
    """Add aliases and labels, (entity, alias, label) in order, in one round trip."""
    if not changes:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            _ADD_ALIAS_LABEL, [{"e": e, "alias": a, "label": lb} for e, a, lb in changes]
        )


async def get(conn: Conn, user_id: str, entity: uuidlib.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        """SELECT uuid, user_id, name, labels, aliases, summary, summary_enc, created_at,
                  updated_at, name_enc
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
                  updated_at, name_enc
           FROM entities WHERE uuid = ANY(%s) ORDER BY name""",
        (uuids,),
    )
    return await cur.fetchall()

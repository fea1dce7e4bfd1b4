"""Facts: bi-temporal edges between entities, with their provenance."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import sql

from engram.errors import NotFoundError
from engram.store.db import Conn

__all__ = [
    "NewFact",
    "add_provenance",
    "add_provenance_many",
    "as_of",
    "candidates_for_episode",
    "close",
    "close_many",
    "delete",
    "find_same",
    "get",
    "insert",
    "insert_many",
    "of_entity",
    "provenance",
    "same_or_related",
    "valid_for_relation",
]

_VEC = np.ndarray[Any, np.dtype[np.float32]]


async def find_same(
    conn: Conn,
    source: uuidlib.UUID,
    relation: str,
    target: uuidlib.UUID,
    vector: _VEC,
    threshold: float,
) -> dict[str, Any] | None:
    """A valid fact saying the same thing: same edge, or same subject and near-identical text."""
    cur = await conn.execute(
        """SELECT uuid, valid_at FROM facts
           WHERE source_uuid = %s AND expired_at IS NULL AND invalid_at IS NULL
             AND ((relation = %s AND target_uuid = %s)
                  OR 1 - (fact_embedding <=> %s) >= %s)
           ORDER BY (relation = %s AND target_uuid = %s) DESC,
                    fact_embedding <=> %s LIMIT 1""",
        (source, relation, target, vector, threshold, relation, target, vector),
    )
    return await cur.fetchone()


async def same_or_related(
    conn: Conn,
    items: list[tuple[uuidlib.UUID, str, _VEC]],
    threshold: float,
) -> list[list[dict[str, Any]]]:
    """For each (subject, relation, vector): the valid facts of that subject that share
    the relation or whose text is at least ``threshold`` similar, with their ``distance``.

    A superset of what find_same and valid_for_relation return, for a whole episode in
    one query; the caller decides among them as new facts are added."""
    found: list[list[dict[str, Any]]] = [[] for _ in items]
    if not items:
        return found
    cur = await conn.execute(
        """SELECT q.i, f.uuid, f.relation, f.target_uuid, f.valid_at,
                  f.fact_embedding <=> q.v AS distance
           FROM unnest(%s::uuid[], %s::text[], %b::vector[]) WITH ORDINALITY
                AS q(source, relation, v, i)
           JOIN facts f ON f.source_uuid = q.source
                       AND f.expired_at IS NULL AND f.invalid_at IS NULL
                       AND (f.relation = q.relation
                            OR 1 - (f.fact_embedding <=> q.v) >= %s)""",
        ([s for s, _, _ in items], [r for _, r, _ in items], [v for _, _, v in items], threshold),
        binary=True,
    )
    for r in await cur.fetchall():
        found[int(r.pop("i")) - 1].append(r)
    return found


async def add_provenance_many(conn: Conn, pairs: list[tuple[uuidlib.UUID, uuidlib.UUID]]) -> None:
    """Append (fact, message) provenance in order, skipping messages already there."""
    if not pairs:
        return
    await conn.execute(
        """WITH p AS (SELECT fact, array_agg(message ORDER BY o) AS messages
                      FROM unnest(%s::uuid[], %s::uuid[]) WITH ORDINALITY AS x(fact, message, o)
                      GROUP BY fact)
           UPDATE facts f
           SET episodes = f.episodes || ARRAY(
                   SELECT m FROM unnest(p.messages) WITH ORDINALITY AS y(m, o)
                   WHERE NOT m = ANY(f.episodes) ORDER BY o)
           FROM p WHERE f.uuid = p.fact""",
        ([f for f, _ in pairs], [m for _, m in pairs]),
    )


async def add_provenance(conn: Conn, fact: uuidlib.UUID, message: uuidlib.UUID) -> None:
    await conn.execute(
        """UPDATE facts SET episodes = CASE WHEN episodes @> ARRAY[%(m)s]::uuid[]
                                            THEN episodes ELSE array_append(episodes, %(m)s) END
           WHERE uuid = %(f)s""",
        {"m": message, "f": fact},
    )


async def valid_for_relation(
    conn: Conn, source: uuidlib.UUID, relation: str
) -> list[dict[str, Any]]:
    """Currently valid facts of one subject and relation (for exclusive relations)."""
    cur = await conn.execute(
        """SELECT uuid, target_uuid, valid_at FROM facts
           WHERE source_uuid = %s AND relation = %s
             AND expired_at IS NULL AND invalid_at IS NULL""",
        (source, relation),
    )
    return await cur.fetchall()


async def close(conn: Conn, fact: uuidlib.UUID, invalid_at: datetime | None) -> None:
    """Mark a fact as no longer holding from ``invalid_at``, learned now. Never deletes."""
    await conn.execute(
        "UPDATE facts SET invalid_at = %s, expired_at = now() WHERE uuid = %s",
        (invalid_at, fact),
    )


async def close_many(conn: Conn, closes: list[tuple[uuidlib.UUID, datetime | None]]) -> None:
    """close() for several facts in one statement."""
    if not closes:
        return
    await conn.execute(
        """UPDATE facts f SET invalid_at = c.at, expired_at = now()
           FROM unnest(%s::uuid[], %s::timestamptz[]) AS c(uuid, at) WHERE f.uuid = c.uuid""",
        ([u for u, _ in closes], [at for _, at in closes]),
    )


@dataclass(frozen=True, slots=True)
class NewFact:
    uuid: uuidlib.UUID
    source: uuidlib.UUID
    target: uuidlib.UUID
    relation: str
    fact: str  # the redacted form when fact_enc is set
    exclusive: bool
    vector: _VEC
    valid_at: datetime | None
    invalid_at: datetime | None
    expired: bool  # closed by a later fact of the same episode
    episodes: list[uuidlib.UUID]
    sensitivity: int = 0
    fact_enc: bytes | None = None


async def insert_many(
    conn: Conn, tenant: str, user_id: str, rows: list[NewFact], ts_config: str
) -> None:
    """Insert facts in one statement."""
    if not rows:
        return
    await conn.execute(
        """INSERT INTO facts (uuid, tenant_id, user_id, source_uuid, target_uuid, relation,
                              fact, exclusive, fact_embedding, search_text, valid_at,
                              invalid_at, expired_at, episodes, sensitivity, fact_enc)
           SELECT r.uuid, %s, %s, r.source, r.target, r.relation, r.fact, r.exclusive, r.v,
                  engram_fact_words(%s::regconfig, r.fact), r.valid_at, r.invalid_at,
                  CASE WHEN r.expired THEN now() END,
                  string_to_array(r.episodes, ',')::uuid[], r.sensitivity, r.fact_enc
           FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::text[],
                       %s::boolean[], %b::vector[], %s::timestamptz[], %s::timestamptz[],
                       %s::boolean[], %s::text[], %s::smallint[], %s::bytea[])
                AS r(uuid, source, target, relation, fact, exclusive, v, valid_at,
                     invalid_at, expired, episodes, sensitivity, fact_enc)""",
        (
            tenant,
            user_id,
            ts_config,
            [r.uuid for r in rows],
            [r.source for r in rows],
            [r.target for r in rows],
            [r.relation for r in rows],
            [r.fact for r in rows],
            [r.exclusive for r in rows],
            [r.vector for r in rows],
            [r.valid_at for r in rows],
            [r.invalid_at for r in rows],
            [r.expired for r in rows],
            [",".join(str(e) for e in r.episodes) for r in rows],
            [r.sensitivity for r in rows],
            [r.fact_enc for r in rows],
        ),
    )


async def insert(
    conn: Conn,
    tenant: str,
    user_id: str,
    source: uuidlib.UUID,
    target: uuidlib.UUID,
    relation: str,
    fact: str,
    exclusive: bool,
    vector: _VEC,
    valid_at: datetime | None,
    invalid_at: datetime | None,
    message: uuidlib.UUID,
    ts_config: str,
    *,
    uuid: uuidlib.UUID | None = None,
    sensitivity: int = 0,
    fact_enc: bytes | None = None,
) -> uuidlib.UUID:
    """Insert a fact; `fact` is its redacted form when `fact_enc` holds the ciphertext."""
    cur = await conn.execute(
        """INSERT INTO facts (uuid, tenant_id, user_id, source_uuid, target_uuid, relation,
                              fact, exclusive, fact_embedding, search_text, valid_at,
                              invalid_at, episodes, sensitivity, fact_enc)
           VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s, %s, %s, %s, %s, %s,
                   engram_fact_words(%s::regconfig, %s), %s, %s, ARRAY[%s]::uuid[], %s, %s)
           RETURNING uuid""",
        (
            uuid,
            tenant,
            user_id,
            source,
            target,
            relation,
            fact,
            exclusive,
            vector,
            ts_config,
            fact,
            valid_at,
            invalid_at,
            message,
            sensitivity,
            fact_enc,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return uuidlib.UUID(str(row["uuid"]))


_FACT_COLUMNS = sql.SQL(
    """f.uuid, f.fact, f.relation, f.rating, f.created_at, f.valid_at, f.invalid_at,
       f.expired_at, f.episodes, f.source_uuid, f.target_uuid, f.user_id, f.sensitivity,
       f.fact_enc"""
)


async def get(conn: Conn, fact: uuidlib.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM facts f WHERE uuid = %s").format(_FACT_COLUMNS), (fact,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("fact", str(fact))
    return row


async def delete(conn: Conn, fact: uuidlib.UUID) -> None:
    cur = await conn.execute("DELETE FROM facts WHERE uuid = %s RETURNING 1", (fact,))
    if await cur.fetchone() is None:
        raise NotFoundError("fact", str(fact))


async def as_of(
    conn: Conn, user_id: str, valid_at: datetime, known_at: datetime, limit: int
) -> list[dict[str, Any]]:
    """Facts of a user that held at ``valid_at``, as recorded at ``known_at``."""
    cur = await conn.execute(
        sql.SQL(
            """SELECT {}, s.name AS source_name, t.name AS target_name,
                      s.name_enc AS source_name_enc, t.name_enc AS target_name_enc
               FROM facts f
               JOIN entities s ON s.tenant_id = f.tenant_id AND s.uuid = f.source_uuid
               JOIN entities t ON t.tenant_id = f.tenant_id AND t.uuid = f.target_uuid
               WHERE f.user_id = %(u)s
                 AND (f.valid_at IS NULL OR f.valid_at <= %(v)s)
                 AND f.created_at <= %(k)s
                 -- Until expired_at we believed the fact open-ended; from then on we
                 -- know it ended at invalid_at.
                 AND (CASE WHEN f.expired_at IS NOT NULL AND f.expired_at > %(k)s THEN true
                           ELSE f.invalid_at IS NULL OR f.invalid_at > %(v)s END)
               ORDER BY f.valid_at NULLS FIRST, f.created_at LIMIT %(n)s"""
        ).format(_FACT_COLUMNS),
        {"u": user_id, "v": valid_at, "k": known_at, "n": limit},
    )
    return await cur.fetchall()


async def of_entity(
    conn: Conn, entity: uuidlib.UUID, include_invalid: bool
) -> list[dict[str, Any]]:
    """Facts in which an entity is the subject or the object, newest first."""
    cur = await conn.execute(
        sql.SQL(
            """SELECT {}, s.name AS source_name, t.name AS target_name,
                      s.name_enc AS source_name_enc, t.name_enc AS target_name_enc
               FROM facts f
               JOIN entities s ON s.tenant_id = f.tenant_id AND s.uuid = f.source_uuid
               JOIN entities t ON t.tenant_id = f.tenant_id AND t.uuid = f.target_uuid
               WHERE (f.source_uuid = %(e)s OR f.target_uuid = %(e)s)
                 AND (%(all)s OR (f.expired_at IS NULL AND f.invalid_at IS NULL))
               ORDER BY f.valid_at DESC NULLS LAST, f.created_at DESC"""
        ).format(_FACT_COLUMNS),
        {"e": entity, "all": include_invalid},
    )
    return await cur.fetchall()


async def provenance(conn: Conn, fact: uuidlib.UUID) -> list[dict[str, Any]]:
    """The messages a fact was extracted from, oldest first."""
    row = await get(conn, fact)
    cur = await conn.execute(
        """SELECT uuid, session_id, role, role_type, content, metadata, token_count,
                  created_at, updated_at, sensitivity, content_enc, metadata_enc
           FROM messages WHERE uuid = ANY(%s) ORDER BY seq""",
        (row["episodes"],),
    )
    return await cur.fetchall()


async def candidates_for_episode(
    conn: Conn, episode: uuidlib.UUID, limit: int
) -> list[dict[str, Any]]:
    """Valid facts of the episode's user closest to what its messages are about."""
    cur = await conn.execute(
        """WITH ep AS (SELECT e.user_id, avg(m.embedding) AS focus
                       FROM episodes e
                       JOIN messages m ON m.uuid = ANY(e.message_uuids)
                                      AND m.episode_uuid = e.uuid
                       WHERE e.uuid = %s GROUP BY e.user_id),
                scope AS MATERIALIZED (
                       SELECT f.uuid, f.fact, f.relation, f.source_uuid, f.target_uuid,
                              f.fact_embedding, f.fact_enc
                       FROM facts f JOIN ep ON f.user_id = ep.user_id
                       WHERE f.expired_at IS NULL AND f.invalid_at IS NULL)
           SELECT scope.uuid, scope.fact, scope.fact_enc, scope.relation, s.name AS subject,
                  t.name AS object, scope.source_uuid, scope.target_uuid,
                  s.name_enc AS subject_enc, t.name_enc AS object_enc
           FROM scope CROSS JOIN ep
           JOIN entities s ON s.uuid = scope.source_uuid
           JOIN entities t ON t.uuid = scope.target_uuid
           ORDER BY scope.fact_embedding <=> ep.focus LIMIT %s""",
        (episode, limit),
    )
    return await cur.fetchall()

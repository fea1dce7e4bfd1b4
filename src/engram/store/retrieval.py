"""Candidate queries for hybrid retrieval: vector, full-text and graph, per target.

Every query takes a `Scope` (users, sessions, time range, as-of, metadata, roles) and
returns at most `k` rows, best first, each with its own score for that signal.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = [
    "Scope",
    "common_lexemes",
    "entities_named",
    "entities_of_messages",
    "entity_vector",
    "fact_text",
    "fact_vector",
    "facts_of_entities",
    "message_text",
    "message_vector",
    "messages_by_uuid",
    "prepare",
]

_VEC = np.ndarray[Any, np.dtype[np.float32]]

MESSAGE_COLUMNS = sql.SQL(
    """m.uuid, m.session_id, m.user_id, m.role, m.role_type, m.content, m.metadata,
       m.token_count, m.created_at, m.updated_at, m.embedding, m.sensitivity, m.content_enc,
       m.metadata_enc"""
)
FACT_COLUMNS = sql.SQL(
    """f.uuid, f.user_id, f.fact, f.relation, f.source_uuid, f.target_uuid, f.valid_at,
       f.invalid_at, f.created_at, f.expired_at, f.episodes, f.rating, f.fact_embedding,
       f.sensitivity, f.fact_enc"""
)
# Entity names of the facts that made the cut (joined after LIMIT, never per candidate).
_NAMED = sql.SQL(
    """SELECT r.*, s.name AS source_name, t.name AS target_name FROM ({}) r
       JOIN entities s ON s.tenant_id = current_setting('app.tenant_id', true)
                      AND s.uuid = r.source_uuid
       JOIN entities t ON t.tenant_id = current_setting('app.tenant_id', true)
                      AND t.uuid = r.target_uuid
       ORDER BY r.score DESC"""
)
ENTITY_COLUMNS = sql.SQL(
    "n.uuid, n.user_id, n.name, n.labels, n.aliases, n.summary, n.created_at, n.name_embedding,"
    " n.summary_enc"
)
# Questions join their words with OR: "what did Ada paint" should find "Ada painted a
# lake", which an AND of all words would not. A word in more than _COMMON_SHARE of the
# rows is left out: it ranks nothing, and made the index return most of the table.
_OR_QUERY = sql.SQL(
    """(SELECT string_agg(quote_literal(l), ' | ')::tsquery
        FROM unnest(tsvector_to_array(to_tsvector({cfg}::regconfig, {q}))) AS l
        WHERE NOT l = ANY({common}))"""
)
_AND_QUERY = sql.SQL("websearch_to_tsquery({cfg}::regconfig, {q})")
_TEXT_POOL = 500  # matches ranked at most per full-text query
_COMMON_SHARE = 0.05
_NAME_WORDS = 8  # longest entity name (in words) recognised in a query
_COMMON_TTL_S = 300.0  # the statistics change with ANALYZE, not per row
_COMMON_SAMPLE = 5000  # rows sampled to find them
_COMMON_LEAST = 200  # fewer rows than this: too few to tell, and fast to search anyway
_common: dict[tuple[str, str], tuple[float, list[str]]] = {}


@dataclass(frozen=True)
class Scope:
    """Which rows a search may return."""

    user_ids: list[str] | None = None
    session_ids: list[str] | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    as_of: datetime | None = None  # facts valid at this time (default: valid now)
    metadata: dict[str, Any] | None = None
    roles: list[str] | None = None  # role_type or role of messages

    @property
    def exact(self) -> bool:
        """True when the scope is narrow enough to scan exactly rather than use the index."""
        return bool(self.user_ids) or bool(self.session_ids)


def _message_where(scope: Scope) -> tuple[sql.Composable, list[Any]]:
    parts: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if scope.user_ids:
        parts.append(sql.SQL("m.user_id = ANY(%s)"))
        params.append(scope.user_ids)
    if scope.session_ids:
        parts.append(sql.SQL("m.session_id = ANY(%s)"))
        params.append(scope.session_ids)
    if scope.time_from is not None:
        parts.append(sql.SQL("m.created_at >= %s"))
        params.append(scope.time_from)
    if scope.time_to is not None:
        parts.append(sql.SQL("m.created_at < %s"))
        params.append(scope.time_to)
    if scope.metadata:
        parts.append(sql.SQL("m.metadata @> %s"))
        params.append(Jsonb(scope.metadata))
    if scope.roles:
        parts.append(sql.SQL("(m.role_type = ANY(%s) OR m.role = ANY(%s))"))
        params.extend([scope.roles, scope.roles])
    return sql.SQL(" AND ").join(parts), params


def _fact_where(scope: Scope) -> tuple[sql.Composable, list[Any]]:
    parts: list[sql.Composable] = []
    params: list[Any] = []
    if scope.as_of is None:
        parts.append(sql.SQL("f.expired_at IS NULL AND f.invalid_at IS NULL"))
    else:
        parts.append(
            sql.SQL(
                "(f.valid_at IS NULL OR f.valid_at <= %s)"
                " AND (f.invalid_at IS NULL OR f.invalid_at > %s)"
            )
        )
        params.extend([scope.as_of, scope.as_of])
    if scope.user_ids:
        parts.append(sql.SQL("f.user_id = ANY(%s)"))
        params.append(scope.user_ids)
    if scope.session_ids:
        parts.append(
            sql.SQL("f.user_id IN (SELECT user_id FROM sessions WHERE session_id = ANY(%s))")
        )
        params.append(scope.session_ids)
    if scope.time_from is not None:
        parts.append(sql.SQL("coalesce(f.valid_at, f.created_at) >= %s"))
        params.append(scope.time_from)
    if scope.time_to is not None:
        parts.append(sql.SQL("coalesce(f.valid_at, f.created_at) < %s"))
        params.append(scope.time_to)
    return sql.SQL(" AND ").join(parts), params


async def prepare(conn: Conn, ef_search: int) -> None:
    """Per-transaction index settings: iterative HNSW scans keep filtered results full."""
    # One round trip for both (set_config with is_local = SET LOCAL).
    await conn.execute(
        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
        " set_config('hnsw.ef_search', %s, true)",
        (str(ef_search),),
    )


async def common_lexemes(conn: Conn, tenant: str, table: str) -> list[str]:
    """Lexemes in more than _COMMON_SHARE of the tenant's rows of ``table``, from a sample
    of about _COMMON_SAMPLE rows (cached per tenant and table for _COMMON_TTL_S)."""
    now = time.monotonic()
    cached = _common.get((tenant, table))
    if cached is not None and now - cached[0] < _COMMON_TTL_S:
        return cached[1]
    cur = await conn.execute(
        "SELECT greatest(reltuples, 1) AS n FROM pg_class WHERE oid = %s::regclass", (table,)
    )
    row = await cur.fetchone()
    percent = min(100.0, 100.0 * _COMMON_SAMPLE / float(row["n"] if row else 1))
    cur = await conn.execute(
        sql.SQL(
            """WITH s AS MATERIALIZED (
                   SELECT search_text FROM {} TABLESAMPLE SYSTEM (%(p)s))
               SELECT array_agg(l) AS lexemes
               FROM (SELECT l FROM s, unnest(tsvector_to_array(s.search_text)) AS l
                     GROUP BY l
                     HAVING count(*) > %(share)s * (SELECT count(*) FROM s)
                        AND (SELECT count(*) FROM s) >= %(least)s) c"""
        ).format(sql.Identifier(table)),
        {"p": percent, "share": _COMMON_SHARE, "least": _COMMON_LEAST},
    )
    found = await cur.fetchone()
    lexemes = list(found["lexemes"] or []) if found else []
    _common[(tenant, table)] = (now, lexemes)
    return lexemes


async def _ordered(conn: Conn, query: sql.Composed, params: list[Any]) -> list[dict[str, Any]]:
    # Binary results: vectors arrive as raw float32 (parsed by numpy), not as text.
    cur = await conn.execute(query, params, binary=True)
    return await cur.fetchall()


async def message_vector(
    conn: Conn, vector: _VEC, scope: Scope, k: int, ef_search: int
) -> list[dict[str, Any]]:
    """Messages nearest by cosine; ``score`` = similarity."""
    where, params = _message_where(scope)
    if scope.exact:
        query = sql.SQL(
            """WITH c AS MATERIALIZED (SELECT {cols} FROM messages m WHERE {where})
               SELECT *, 1 - (embedding <=> %s) AS score FROM c
               ORDER BY embedding <=> %s LIMIT %s"""
        )
        args = [*params, vector, vector, k]
    else:
        await conn.execute(
            sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(ef_search, k)))
        )
        query = sql.SQL(
            """SELECT {cols}, 1 - (m.embedding <=> %s) AS score FROM messages m
               WHERE {where} ORDER BY m.embedding <=> %s LIMIT %s"""
        )
        # Placeholders in text order: the score's vector comes before the filters.
        args = [vector, *params, vector, k]
    return await _ordered(conn, query.format(cols=MESSAGE_COLUMNS, where=where), args)


async def message_text(
    conn: Conn, text: str, ts_config: str, scope: Scope, k: int, common: list[str] | None = None
) -> list[dict[str, Any]]:
    """Messages matching the query words (stemmed), ranked by ts_rank_cd; ``score`` = rank.

    Within a user or sessions any word may match; tenant-wide every word must, and at
    most _TEXT_POOL matches are ranked, so a common word cannot make the query scan
    the whole table.
    """
    where, params = _message_where(scope)
    tsq, tsq_params = _tsquery(text, ts_config, scope, common)
    query = sql.SQL(
        """SELECT * FROM (
               SELECT {cols}, ts_rank_cd(m.search_text, t.q, 32) AS score
               FROM messages m, (SELECT {tsq} AS q) AS t
               WHERE m.search_text @@ t.q AND {where} LIMIT {pool}) r
           ORDER BY score DESC LIMIT %s"""
    ).format(cols=MESSAGE_COLUMNS, tsq=tsq, where=where, pool=sql.Literal(_TEXT_POOL))
    return await _ordered(conn, query, [*tsq_params, *params, k])


def _tsquery(
    text: str, ts_config: str, scope: Scope, common: list[str] | None
) -> tuple[sql.Composed, list[Any]]:
    if not scope.exact:
        return _AND_QUERY.format(cfg=sql.Literal(ts_config), q=sql.Placeholder()), [text]
    query = _OR_QUERY.format(
        cfg=sql.Literal(ts_config), q=sql.Placeholder(), common=sql.Placeholder()
    )
    return query, [text, common or []]


async def fact_vector(conn: Conn, vector: _VEC, scope: Scope, k: int) -> list[dict[str, Any]]:
    """Facts nearest by cosine. The planner picks the scan: the HNSW index (iterative, so
    filters still fill ``k``) for a large graph, or the user's rows and a sort."""
    where, params = _fact_where(scope)
    query = sql.SQL(
        """SELECT {cols}, 1 - (f.fact_embedding <=> %s) AS score FROM facts f
           WHERE {where} ORDER BY f.fact_embedding <=> %s LIMIT %s"""
    ).format(cols=FACT_COLUMNS, where=where)
    return await _ordered(conn, _NAMED.format(query), [vector, *params, vector, k])


async def fact_text(
    conn: Conn, text: str, ts_config: str, scope: Scope, k: int, common: list[str] | None = None
) -> list[dict[str, Any]]:
    """Facts matching the query words, ranked like message_text."""
    where, params = _fact_where(scope)
    tsq, tsq_params = _tsquery(text, ts_config, scope, common)
    query = sql.SQL(
        """SELECT * FROM (
               SELECT {cols}, ts_rank_cd(f.search_text, t.q, 32) AS score
               FROM facts f, (SELECT {tsq} AS q) AS t
               WHERE f.search_text @@ t.q AND {where} LIMIT {pool}) r
           ORDER BY score DESC LIMIT %s"""
    ).format(cols=FACT_COLUMNS, tsq=tsq, where=where, pool=sql.Literal(_TEXT_POOL))
    return await _ordered(conn, _NAMED.format(query), [*tsq_params, *params, k])


async def entity_vector(conn: Conn, vector: _VEC, scope: Scope, k: int) -> list[dict[str, Any]]:
    parts: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if scope.user_ids:
        parts.append(sql.SQL("n.user_id = ANY(%s)"))
        params.append(scope.user_ids)
    query = sql.SQL(
        """WITH c AS MATERIALIZED (SELECT {cols} FROM entities n WHERE {where})
           SELECT *, 1 - (name_embedding <=> %s) AS score FROM c
           ORDER BY name_embedding <=> %s LIMIT %s"""
    ).format(cols=ENTITY_COLUMNS, where=sql.SQL(" AND ").join(parts))
    return await _ordered(conn, query, [*params, vector, vector, k])


async def entities_named(conn: Conn, normalized_query: str, scope: Scope) -> list[uuidlib.UUID]:
    """Entities whose name or alias appears, as whole words, in the (normalised) query."""
    if not scope.user_ids:
        return []
    # Every run of whole words is looked up by the unique index, rather than every
    # entity's name matched against the query.
    words = normalized_query.split()
    runs = {
        " ".join(words[i : i + n])
        for n in range(1, _NAME_WORDS + 1)
        for i in range(len(words) - n + 1)
    }
    runs = {r for r in runs if len(r) > 2}
    if not runs:
        return []
    cur = await conn.execute(
        """SELECT uuid FROM entities
           WHERE user_id = ANY(%s) AND normalized_name = ANY(%s)""",
        (scope.user_ids, sorted(runs)),
    )
    return [r["uuid"] for r in await cur.fetchall()]


async def entities_of_messages(conn: Conn, messages: list[uuidlib.UUID]) -> list[uuidlib.UUID]:
    """Entities mentioned in the given messages."""
    if not messages:
        return []
    cur = await conn.execute(
        """SELECT DISTINCT entity_uuid AS uuid FROM entity_mentions
           WHERE tenant_id = current_setting('app.tenant_id', true)
             AND message_uuid = ANY(%s::uuid[])""",
        (messages,),
    )
    return [r["uuid"] for r in await cur.fetchall()]


async def facts_of_entities(
    conn: Conn, entities: list[uuidlib.UUID], vector: _VEC, scope: Scope, k: int
) -> list[dict[str, Any]]:
    """Valid facts touching any of the entities (one hop), the ``k`` closest to the query."""
    if not entities:
        return []
    where, params = _fact_where(scope)
    query = sql.SQL(
        """SELECT {cols}, 1 - (f.fact_embedding <=> %s) AS score FROM facts f
           WHERE (f.source_uuid = ANY(%s) OR f.target_uuid = ANY(%s)) AND {where}
           ORDER BY f.fact_embedding <=> %s LIMIT %s"""
    ).format(cols=FACT_COLUMNS, where=where)
    return await _ordered(
        conn, _NAMED.format(query), [vector, entities, entities, *params, vector, k]
    )


async def messages_by_uuid(
    conn: Conn, uuids: list[uuidlib.UUID], vector: _VEC, scope: Scope
) -> list[dict[str, Any]]:
    """The given messages where the scope allows them; ``score`` = similarity to the query."""
    if not uuids:
        return []
    where, params = _message_where(scope)
    query = sql.SQL(
        """SELECT {cols}, 1 - (m.embedding <=> %s) AS score FROM messages m
           WHERE m.uuid = ANY(%s) AND {where} ORDER BY score DESC"""
    ).format(cols=MESSAGE_COLUMNS, where=where)
    return await _ordered(conn, query, [vector, uuids, *params])

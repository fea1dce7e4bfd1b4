"""Candidate queries for hybrid retrieval: vector, full-text and graph, per target.

Every query takes a `Scope` (users, sessions, time range, as-of, metadata, roles) and
returns at most `k` rows, best first, each with its own score for that signal. The
query functions build a `Statement`; `send` starts it and `rows` reads its rows, so that
a connection in pipeline mode runs several of them in one round trip.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import AsyncCursor, sql
from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = [
    "EPISODES_PER_FACT",
    "Scope",
    "Statement",
    "common_lexemes",
    "entities_named",
    "entity_vector",
    "fact_text",
    "fact_vector",
    "message_text",
    "message_vector",
    "messages_by_uuid",
    "neighbourhood",
    "rows",
    "search_settings",
    "send",
]

_VEC = np.ndarray[Any, np.dtype[np.float32]]
Cursor = AsyncCursor[dict[str, Any]]

_MESSAGE_COLUMNS = sql.SQL(
    """m.uuid, m.session_id, m.user_id, m.role, m.role_type, m.content, m.metadata,
       m.token_count, m.created_at, m.updated_at, m.sensitivity, m.content_enc,
       m.metadata_enc"""
)
# A fact said again and again cites thousands of episodes: a search reads the first
# EPISODES_PER_FACT (GET /v1/facts/{uuid}/episodes lists them all).
EPISODES_PER_FACT = 20
_FACT_COLUMNS = sql.SQL(
    """f.uuid, f.user_id, f.fact, f.relation, f.source_uuid, f.target_uuid, f.valid_at,
       f.invalid_at, f.created_at, f.expired_at, f.episodes[1:{n}] AS episodes, f.rating,
       f.sensitivity, f.fact_enc"""
).format(n=sql.Literal(EPISODES_PER_FACT))
_ENTITY_COLUMNS = sql.SQL(
    """n.uuid, n.user_id, n.name, n.labels, n.aliases, n.summary, n.created_at, n.summary_enc,
       n.name_enc"""
)


def _columns(names: sql.Composable, vector: sql.SQL, with_vectors: bool) -> sql.Composable:
    # A row's embedding (1.5 KB at 384 dimensions) only when the caller re-ranks by it.
    return sql.SQL("{}, {}").format(names, vector) if with_vectors else names


def _message_columns(with_vectors: bool) -> sql.Composable:
    return _columns(_MESSAGE_COLUMNS, sql.SQL("m.embedding"), with_vectors)


def _fact_columns(with_vectors: bool) -> sql.Composable:
    return _columns(_FACT_COLUMNS, sql.SQL("f.fact_embedding"), with_vectors)


# Entity names of the facts that made the cut (joined after LIMIT, never per candidate).
_NAMED = sql.SQL(
    """SELECT r.*, s.name AS source_name, t.name AS target_name,
              s.name_enc AS source_name_enc, t.name_enc AS target_name_enc FROM ({}) r
       JOIN entities s ON s.tenant_id = current_setting('app.tenant_id', true)
                      AND s.uuid = r.source_uuid
       JOIN entities t ON t.tenant_id = current_setting('app.tenant_id', true)
                      AND t.uuid = r.target_uuid
       ORDER BY r.score DESC"""
)
# Questions join their words with OR: "what did Ada paint" should find "Ada painted a
# lake", which an AND of all words would not. A word in more than _COMMON_SHARE of the
# rows is left out: it ranks nothing, and made the index return most of the table.
_OR_QUERY = sql.SQL(
    """(SELECT string_agg(quote_literal(l), ' | ')::tsquery
        FROM unnest(tsvector_to_array(to_tsvector({cfg}::regconfig, {q}))) AS l
        WHERE NOT l = ANY(string_to_array({common}, E'\\n')))"""
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
class Statement:
    """One query and its parameters."""

    query: sql.SQL | sql.Composed
    params: Sequence[Any] = ()


async def send(conn: Conn, statement: Statement) -> Cursor:
    """Start the statement; in pipeline mode without waiting for its result."""
    # Binary results: vectors arrive as raw float32 (parsed by numpy), not as text.
    cur = conn.cursor(binary=True)
    await cur.execute(statement.query, statement.params)
    return cur


async def rows(cur: Cursor) -> list[dict[str, Any]]:
    """The rows of a statement started by `send` (waits for them)."""
    return await cur.fetchall()


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


def search_settings(ef_search: int) -> Statement:
    """Per-transaction index settings: iterative HNSW scans keep filtered results full."""
    return Statement(
        sql.SQL(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
            " set_config('hnsw.ef_search', %s, true)"
        ),
        [str(ef_search)],
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


def message_vector(vector: _VEC, scope: Scope, k: int, *, with_vectors: bool = False) -> Statement:
    """Messages nearest by cosine; ``score`` = similarity. Tenant-wide, the HNSW index at
    the transaction's ``hnsw.ef_search`` (see `search_settings`)."""
    where, params = _message_where(scope)
    cols = _message_columns(with_vectors)
    if scope.exact:
        query = sql.SQL(
            """WITH c AS MATERIALIZED (SELECT {cols}, m.embedding <=> %s AS distance
                                       FROM messages m WHERE {where})
               SELECT *, 1 - distance AS score FROM c ORDER BY distance LIMIT %s"""
        )
    else:
        query = sql.SQL(
            """SELECT {cols}, 1 - (m.embedding <=> %s) AS score FROM messages m
               WHERE {where} ORDER BY m.embedding <=> %s LIMIT %s"""
        )
        params = [*params, vector]
    # Placeholders in text order: the score's vector comes before the filters.
    return Statement(query.format(cols=cols, where=where), [vector, *params, k])


def message_text(
    text: str, ts_config: str, scope: Scope, k: int, common: list[str] | None = None,
    *, with_vectors: bool = False,
) -> Statement:  # fmt: skip
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
    ).format(
        cols=_message_columns(with_vectors),
        tsq=tsq, where=where, pool=sql.Literal(_TEXT_POOL),
    )  # fmt: skip
    return Statement(query, [*tsq_params, *params, k])


def _tsquery(
    text: str, ts_config: str, scope: Scope, common: list[str] | None
) -> tuple[sql.Composed, list[Any]]:
    if not scope.exact:
        return _AND_QUERY.format(cfg=sql.Literal(ts_config), q=sql.Placeholder()), [text]
    query = _OR_QUERY.format(
        cfg=sql.Literal(ts_config), q=sql.Placeholder(), common=sql.Placeholder()
    )
    return query, [text, _lines(common or [])]


def fact_vector(vector: _VEC, scope: Scope, k: int, *, with_vectors: bool = False) -> Statement:
    """Facts nearest by cosine. The planner picks the scan: the HNSW index (iterative, so
    filters still fill ``k``) for a large graph, or the user's rows and a sort."""
    where, params = _fact_where(scope)
    query = sql.SQL(
        """SELECT {cols}, 1 - (f.fact_embedding <=> %s) AS score FROM facts f
           WHERE {where} ORDER BY f.fact_embedding <=> %s LIMIT %s"""
    ).format(cols=_fact_columns(with_vectors), where=where)
    return Statement(_NAMED.format(query), [vector, *params, vector, k])


def fact_text(
    text: str, ts_config: str, scope: Scope, k: int, common: list[str] | None = None,
    *, with_vectors: bool = False,
) -> Statement:  # fmt: skip
    """Facts matching the query words, ranked like message_text."""
    where, params = _fact_where(scope)
    tsq, tsq_params = _tsquery(text, ts_config, scope, common)
    # The matches are found and ranked on ids and words alone (facts_user_text_idx holds
    # them for a user's valid facts); only the best k rows are read whole.
    query = sql.SQL(
        """SELECT {cols}, p.score FROM (
               SELECT * FROM (
                   SELECT f.uuid, ts_rank_cd(f.search_text, t.q, 32) AS score
                   FROM facts f, (SELECT {tsq} AS q) AS t
                   WHERE f.search_text @@ t.q AND {where} LIMIT {pool}) m
               ORDER BY score DESC LIMIT %s) p
           JOIN facts f ON f.tenant_id = current_setting('app.tenant_id', true)
                       AND f.uuid = p.uuid"""
    ).format(cols=_fact_columns(with_vectors), tsq=tsq, where=where, pool=sql.Literal(_TEXT_POOL))
    return Statement(_NAMED.format(query), [*tsq_params, *params, k])


def entity_vector(vector: _VEC, scope: Scope, k: int, *, with_vectors: bool = False) -> Statement:
    parts: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if scope.user_ids:
        parts.append(sql.SQL("n.user_id = ANY(%s)"))
        params.append(scope.user_ids)
    query = sql.SQL(
        """WITH c AS MATERIALIZED (SELECT {cols}, n.name_embedding <=> %s AS distance
                                   FROM entities n WHERE {where})
           SELECT *, 1 - distance AS score FROM c ORDER BY distance LIMIT %s"""
    ).format(
        cols=_columns(_ENTITY_COLUMNS, sql.SQL("n.name_embedding"), with_vectors),
        where=sql.SQL(" AND ").join(parts),
    )
    return Statement(query, [vector, *params, k])


def entities_named(normalized_query: str, scope: Scope) -> Statement | None:
    """Entities whose name or alias appears, as whole words, in the (normalised) query;
    None when there is nothing to look up."""
    if not scope.user_ids:
        return None
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
        return None
    return Statement(
        sql.SQL(
            "SELECT uuid FROM entities WHERE user_id = ANY(%s)"
            " AND normalized_name = ANY(string_to_array(%s, E'\\n'))"
        ),
        [scope.user_ids, _lines(sorted(runs))],
    )


def _lines(words: list[str]) -> str:
    # Hundreds of words go as one text split by PostgreSQL: a list parameter costs the
    # client a regex per element. Lexemes and normalised names hold no newline.
    return "\n".join(words)


# Facts within two hops of the seed entities (given, and those the seed messages mention),
# in one statement: the k closest to the query touching a seed (depth 1), then the k
# closest touching an entity of the `fanout` closest of those, other than a seed (depth 2;
# only onward from the closest facts, as a hub entity would pull in its whole
# neighbourhood). A fact can come at both depths.
_NEIGHBOURHOOD = sql.SQL(
    """WITH seeds AS (
           SELECT unnest(%s::uuid[]) AS e
           UNION SELECT entity_uuid FROM entity_mentions
                 WHERE tenant_id = current_setting('app.tenant_id', true)
                   AND message_uuid = ANY(%s::uuid[])),
       hop1 AS MATERIALIZED (
           SELECT {cols}, f.fact_embedding <=> %s AS distance FROM facts f
           WHERE (f.source_uuid = ANY(ARRAY(SELECT e FROM seeds))
                  OR f.target_uuid = ANY(ARRAY(SELECT e FROM seeds))) AND {where}
           ORDER BY distance LIMIT %s),
       frontier AS (
           SELECT x.e FROM (SELECT source_uuid, target_uuid FROM hop1
                            ORDER BY distance LIMIT %s) h,
                LATERAL (VALUES (h.source_uuid), (h.target_uuid)) AS x(e)
           EXCEPT SELECT e FROM seeds),
       hop2 AS MATERIALIZED (
           SELECT {cols}, f.fact_embedding <=> %s AS distance FROM facts f
           WHERE (f.source_uuid = ANY(ARRAY(SELECT e FROM frontier))
                  OR f.target_uuid = ANY(ARRAY(SELECT e FROM frontier))) AND {where}
           ORDER BY distance LIMIT %s)
       SELECT *, 1 - distance AS score, 1 AS depth FROM hop1
       UNION ALL SELECT *, 1 - distance, 2 FROM hop2"""
)


def neighbourhood(
    entities: Sequence[uuidlib.UUID], messages: Sequence[uuidlib.UUID], vector: _VEC,
    scope: Scope, k: int, fanout: int, *, with_vectors: bool = False,
) -> Statement:  # fmt: skip
    """Valid facts one and two hops from the given entities and those the given messages
    mention, each with its ``depth``; ``score`` = similarity to the query."""
    where, params = _fact_where(scope)
    query = _NEIGHBOURHOOD.format(cols=_fact_columns(with_vectors), where=where)
    return Statement(
        _NAMED.format(query),
        [list(entities), list(messages), vector, *params, k, fanout, vector, *params, k],
    )


def messages_by_uuid(
    uuids: list[uuidlib.UUID], vector: _VEC, scope: Scope, *, with_vectors: bool = False
) -> Statement:
    """The given messages where the scope allows them; ``score`` = similarity to the query."""
    where, params = _message_where(scope)
    query = sql.SQL(
        """SELECT {cols}, 1 - (m.embedding <=> %s) AS score FROM messages m
           WHERE m.uuid = ANY(%s) AND {where} ORDER BY score DESC"""
    ).format(cols=_message_columns(with_vectors), where=where)
    return Statement(query, [vector, uuids, *params])

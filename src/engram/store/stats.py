"""Catalog and statistics queries: relation sizes, workload shape, health figures.

Used by `engram size --measure` (synchronous, once) and by the metrics sampler
(asynchronous, every few seconds on its own connection). Everything here reads the
system catalogs and statistics views, except ``workload_shape``, which samples the
Engram tables inside one tenant's context (Row-Level Security hides other tenants'
rows from the app role; a superuser or BYPASSRLS role sees them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "DbHealth",
    "IndexSize",
    "RelationSize",
    "TableHealth",
    "encryption_coverage",
    "read_health",
    "relation_sizes",
    "workload_shape",
]

_SIZES = """
SELECT c.relname AS name,
       c.reltuples::float8 AS reltuples,
       coalesce(s.n_live_tup, 0)::float8 AS live,
       pg_relation_size(c.oid, 'main') + pg_relation_size(c.oid, 'fsm')
         + pg_relation_size(c.oid, 'vm') AS heap,
       CASE WHEN c.reltoastrelid = 0 THEN 0
            ELSE pg_total_relation_size(c.reltoastrelid) END AS toast
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
"""

_INDEXES = """
SELECT t.relname AS table_name, i.relname AS name, am.amname AS kind,
       pg_relation_size(i.oid) AS bytes
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_am am ON am.oid = i.relam
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema()
"""


@dataclass
class IndexSize:
    name: str
    kind: str
    bytes: int


@dataclass
class RelationSize:
    name: str
    rows: float
    heap_bytes: int
    toast_bytes: int
    indexes: list[IndexSize] = field(default_factory=list)

    @property
    def index_bytes(self) -> int:
        return sum(i.bytes for i in self.indexes)

    @property
    def total_bytes(self) -> int:
        return self.heap_bytes + self.toast_bytes + self.index_bytes


def relation_sizes(conn: psycopg.Connection[Any]) -> dict[str, RelationSize]:
    """Every table of the current schema with its heap, TOAST and index bytes."""
    out: dict[str, RelationSize] = {}
    for name, reltuples, live, heap, toast in conn.execute(_SIZES).fetchall():
        # reltuples is -1 until the first ANALYZE; the statistics collector's live
        # count is the next best thing without scanning the table.
        rows = float(reltuples) if reltuples >= 0 else float(live)
        out[name] = RelationSize(name, rows, int(heap), int(toast))
    for table, name, kind, size in conn.execute(_INDEXES).fetchall():
        if table in out:
            out[table].indexes.append(IndexSize(name, kind, int(size)))
    return out


def _count(conn: psycopg.Connection[Any], table: str, rows: float) -> float:
    if rows > 0:
        return rows
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return float(row[0]) if row else 0.0


def _sample_pct(rows: float, want: int = 20_000) -> float:
    return 100.0 if rows <= want else max(0.01, 100.0 * want / rows)


def workload_shape(
    conn: psycopg.Connection[Any], tenant: str, sizes: dict[str, RelationSize]
) -> dict[str, float]:
    """Counts and average widths of the stored data, from a sample of each table."""
    rows = {name: sizes[name].rows if name in sizes else 0.0 for name in (
        "messages", "sessions", "users", "facts", "entities", "episodes")}  # fmt: skip
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        counts = {name: _count(conn, name, n) for name, n in rows.items()}
        msg = conn.execute(
            sql.SQL(
                "SELECT avg(octet_length(content)), avg(octet_length(session_id)),"
                " avg(octet_length(coalesce(user_id, ''))), avg(octet_length(tenant_id))"
                " FROM messages TABLESAMPLE SYSTEM ({})"
            ).format(sql.Literal(_sample_pct(counts["messages"])))
        ).fetchone()
        fact = conn.execute(
            sql.SQL("SELECT avg(octet_length(fact)) FROM facts TABLESAMPLE SYSTEM ({})").format(
                sql.Literal(_sample_pct(counts["facts"]))
            )
        ).fetchone()
    avg_content, avg_session_id, avg_user_id, avg_tenant = msg or (None, None, None, None)
    return {
        **counts,
        "avg_message_bytes": float(avg_content or 0.0),
        "id_bytes": (float(avg_session_id or 0) + float(avg_user_id or 0)) / 2,
        "tenant_bytes": float(avg_tenant or 0.0),
        "avg_fact_bytes": float((fact or (None,))[0] or 0.0),
    }


# --------------------------------------------------------------------------- health


@dataclass
class TableHealth:
    name: str
    live: int
    dead: int
    vacuum_age_s: float  # since the last vacuum or autovacuum (or server start)


@dataclass
class DbHealth:
    connections: int
    max_connections: int
    longest_query_s: float
    database_bytes: int
    vector_indexes: dict[tuple[str, str], int]  # (table, index) -> bytes
    tables: list[TableHealth]
    jobs_todo: int
    jobs_doing: int
    oldest_job_age_s: float
    backup_last_success: float | None = None  # epoch seconds of the latest good backup
    backup_failures: int = 0


_HEALTH = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       coalesce((SELECT extract(epoch FROM max(now() - query_start))
                 FROM pg_stat_activity
                 WHERE state = 'active' AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid()), 0)::float8,
       pg_database_size(current_database())
"""

_VECTOR_INDEXES = """
SELECT t.relname, i.relname, pg_relation_size(i.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_am am ON am.oid = i.relam
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND am.amname IN ('hnsw', 'ivfflat')
"""

_TABLES = """
SELECT s.relname, s.n_live_tup, s.n_dead_tup,
       extract(epoch FROM now() - coalesce(greatest(s.last_autovacuum, s.last_vacuum),
                                           pg_postmaster_start_time()))::float8
FROM pg_stat_user_tables s
WHERE s.schemaname = current_schema()
"""

# Counts through the partial indexes on todo/doing jobs (succeeded jobs are never
# scanned); the oldest waiting job is the todo job with the smallest id that is due.
_JOBS = """
SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'),
       (SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'),
       coalesce((
           SELECT extract(epoch FROM now() - coalesce(j.scheduled_at, (
                      SELECT min(e.at) FROM procrastinate_events e
                      WHERE e.job_id = j.id AND e.type = 'deferred')))
           FROM procrastinate_jobs j
           WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
           ORDER BY j.id
           LIMIT 1), 0)::float8
"""


# Protected fields and those stored as ciphertext, per kind of field (`sensitivity > 0`
# lets the planner use the partial indexes on it: a message's class is at least its
# metadata's). A message or fact is protected when its class is; a message's metadata,
# a user's or a session's when its own class is; a user's e-mail, first and last name
# (each when set) when their group's class is. A user's protected fields are sealed
# together in `profile_enc` (before migration 0017, each in its own column).
_COVERAGE = """
SELECT (SELECT count(*) FROM messages WHERE sensitivity > 0 AND sensitivity = ANY(%(l)s))
     + (SELECT count(*) FROM messages
        WHERE sensitivity > 0 AND metadata_sensitivity = ANY(%(l)s))
     + (SELECT count(*) FROM facts WHERE sensitivity > 0 AND sensitivity = ANY(%(l)s))
     + (SELECT coalesce(sum((email IS NOT NULL)::int + (first_name IS NOT NULL)::int
                            + (last_name IS NOT NULL)::int), 0)
        FROM users WHERE identity_sensitivity = ANY(%(l)s))
     + (SELECT count(*) FROM users WHERE metadata_sensitivity = ANY(%(l)s))
     + (SELECT count(*) FROM sessions WHERE metadata_sensitivity = ANY(%(l)s)),
       -- A message's class is the higher of its content's and its metadata's: it is
       -- covered when what made it protected is sealed (either may be the only one).
       (SELECT count(*) FROM messages
        WHERE sensitivity > 0 AND sensitivity = ANY(%(l)s)
          AND (content_enc IS NOT NULL OR metadata_enc IS NOT NULL))
     + (SELECT count(*) FROM messages
        WHERE sensitivity > 0 AND metadata_sensitivity = ANY(%(l)s) AND metadata_enc IS NOT NULL)
     + (SELECT count(*) FROM facts
        WHERE sensitivity > 0 AND sensitivity = ANY(%(l)s) AND fact_enc IS NOT NULL)
     + (SELECT coalesce(sum(
            (email IS NOT NULL AND coalesce(profile_enc, email_enc) IS NOT NULL)::int
          + (first_name IS NOT NULL AND coalesce(profile_enc, first_name_enc) IS NOT NULL)::int
          + (last_name IS NOT NULL AND coalesce(profile_enc, last_name_enc) IS NOT NULL)::int), 0)
        FROM users WHERE identity_sensitivity = ANY(%(l)s))
     + (SELECT count(*) FROM users
        WHERE metadata_sensitivity = ANY(%(l)s)
          AND coalesce(profile_enc, metadata_enc) IS NOT NULL)
     + (SELECT count(*) FROM sessions
        WHERE metadata_sensitivity = ANY(%(l)s) AND metadata_enc IS NOT NULL)
"""


async def encryption_coverage(
    conn: psycopg.AsyncConnection[Any], tenant: str, levels: list[int]
) -> tuple[int, int]:
    """(protected fields, of which stored as ciphertext) of one tenant."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        cur = await conn.execute(_COVERAGE, {"l": levels})
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def reencrypt_runs(conn: psycopg.AsyncConnection[Any], tenant: str) -> dict[str, int]:
    """Re-encryption runs of one tenant by status (running, done, failed)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        cur = await conn.execute("SELECT status, count(*) FROM reencrypt_runs GROUP BY 1")
        return {str(r[0]): int(r[1]) for r in await cur.fetchall()}


async def read_health_bounded(conn: psycopg.AsyncConnection[Any]) -> DbHealth:
    """read_health in its own transaction, cut off after 5 s (SET LOCAL: PgBouncer-safe)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = '5s'")
        return await read_health(conn)


async def read_health(conn: psycopg.AsyncConnection[Any]) -> DbHealth:
    """One sample of the database figures the metrics export (catalog reads only)."""
    cur = await conn.execute(_HEALTH)
    row = await cur.fetchone()
    assert row is not None
    connections, max_conn, longest, db_bytes = row
    cur = await conn.execute(_VECTOR_INDEXES)
    vector = {(str(t), str(i)): int(b) for t, i, b in await cur.fetchall()}
    cur = await conn.execute(_TABLES)
    tables = [
        TableHealth(str(n), int(live), int(dead), float(age))
        for n, live, dead, age in await cur.fetchall()
    ]
    todo = doing = 0
    oldest = 0.0
    cur = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
    exists = await cur.fetchone()
    if exists and exists[0]:
        cur = await conn.execute(_JOBS)
        jobs = await cur.fetchone()
        if jobs is not None:
            todo, doing, oldest = int(jobs[0]), int(jobs[1]), float(jobs[2])
    last_backup, backup_failures = None, 0
    cur = await conn.execute("SELECT to_regclass('backup_runs') IS NOT NULL")
    exists = await cur.fetchone()
    if exists and exists[0]:
        cur = await conn.execute(
            """SELECT extract(epoch FROM max(finished_at) FILTER (WHERE status = 'done')),
                      count(*) FILTER (WHERE status = 'failed')
               FROM backup_runs"""
        )
        backup = await cur.fetchone()
        if backup is not None:
            last_backup = None if backup[0] is None else float(backup[0])
            backup_failures = int(backup[1])
    return DbHealth(
        backup_last_success=last_backup,
        backup_failures=backup_failures,
        connections=int(connections),
        max_connections=int(max_conn),
        longest_query_s=float(longest),
        database_bytes=int(db_bytes),
        vector_indexes=vector,
        tables=tables,
        jobs_todo=todo,
        jobs_doing=doing,
        oldest_job_age_s=oldest,
    )

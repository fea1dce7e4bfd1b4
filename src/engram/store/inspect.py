"""Catalog reads for `engram doctor`: server, roles, Row-Level Security, vector indexes,
autovacuum and the job queue. Read-only, and readable by the app role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = [
    "JobQueue",
    "RoleInfo",
    "ServerInfo",
    "TenantTable",
    "VectorColumn",
    "job_queue",
    "role_info",
    "server_info",
    "tenant_tables",
    "vector_columns",
]


@dataclass(frozen=True)
class ServerInfo:
    version_num: int
    version: str
    pgvector: str | None
    max_connections: int
    reserved_connections: int  # superuser_reserved_connections (+ reserved_connections)
    connections: int  # client backends now
    autovacuum: bool
    ssl: bool  # this connection is encrypted
    unix_socket: bool


_SERVER = """
SELECT current_setting('server_version_num')::int,
       current_setting('server_version'),
       (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true), '0')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
       current_setting('autovacuum')::bool,
       coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),
       inet_client_addr() IS NULL
"""


def server_info(conn: psycopg.Connection[Any]) -> ServerInfo:
    """Version, pgvector, connection limits and whether this connection uses TLS."""
    row = conn.execute(_SERVER).fetchone()
    assert row is not None
    return ServerInfo(
        int(row[0]),
        str(row[1]),
        row[2],
        int(row[3]),
        int(row[4]),
        int(row[5]),
        bool(row[6]),
        bool(row[7]),
        bool(row[8]),
    )


@dataclass(frozen=True)
class RoleInfo:
    name: str
    superuser: bool
    bypassrls: bool
    owned_tables: list[str]


def role_info(conn: psycopg.Connection[Any]) -> RoleInfo:
    """The connected role's privileges and the tables of the current schema it owns."""
    row = conn.execute(
        "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    owned = conn.execute(
        """SELECT c.relname FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
             AND pg_get_userbyid(c.relowner) = current_user
           ORDER BY 1"""
    ).fetchall()
    return RoleInfo(str(row[0]), bool(row[1]), bool(row[2]), [str(r[0]) for r in owned])


@dataclass(frozen=True)
class TenantTable:
    name: str
    rls_enabled: bool
    rls_forced: bool
    policies: int
    reloptions: dict[str, str]
    live: int
    dead: int


def tenant_tables(conn: psycopg.Connection[Any]) -> list[TenantTable]:
    """Every table of the current schema with a tenant_id column."""
    rows = conn.execute(
        """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                  (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)::int,
                  coalesce(c.reloptions, '{}'),
                  coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0)
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
             AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                         AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           ORDER BY 1"""
    ).fetchall()
    out = []
    for name, enabled, forced, policies, options, live, dead in rows:
        opts = dict(str(o).split("=", 1) for o in options)
        out.append(
            TenantTable(
                str(name), bool(enabled), bool(forced), int(policies), opts, int(live), int(dead)
            )
        )
    return out


@dataclass(frozen=True)
class VectorColumn:
    table: str
    column: str
    dimensions: int  # -1: declared without a size
    index: str | None
    method: str | None  # hnsw / ivfflat
    valid: bool
    options: dict[str, str]


def vector_columns(conn: psycopg.Connection[Any]) -> list[VectorColumn]:
    """Every vector/halfvec column of the current schema with its ANN index, if any."""
    rows = conn.execute(
        """SELECT c.relname, a.attname, a.atttypmod,
                  i.relname, am.amname, coalesce(x.indisvalid AND x.indisready, false),
                  coalesce(i.reloptions, '{}')
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_index x ON x.indrelid = c.oid AND a.attnum = ANY(x.indkey)
           LEFT JOIN pg_class i ON i.oid = x.indexrelid
           LEFT JOIN pg_am am ON am.oid = i.relam
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
             AND t.typname IN ('vector', 'halfvec') AND a.attnum > 0 AND NOT a.attisdropped
             AND (am.amname IS NULL OR am.amname IN ('hnsw', 'ivfflat'))
           ORDER BY 1, 2, 4"""
    ).fetchall()
    return [
        VectorColumn(
            str(t),
            str(col),
            int(mod),
            idx,
            am,
            bool(valid),
            dict(str(o).split("=", 1) for o in opts),
        )
        for t, col, mod, idx, am, valid, opts in rows
    ]


@dataclass(frozen=True)
class JobQueue:
    todo: int
    doing: int
    failed: int
    oldest_todo_s: float
    live_workers: int  # workers with a heartbeat in the last minute


def job_queue(conn: psycopg.Connection[Any]) -> JobQueue | None:
    """The extraction queue's state, or None when its tables do not exist."""
    row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE status = 'todo'),
                  count(*) FILTER (WHERE status = 'doing'),
                  count(*) FILTER (WHERE status = 'failed'),
                  coalesce(extract(epoch FROM now() - min(coalesce(scheduled_at, e.at))
                           FILTER (WHERE status = 'todo'
                                   AND (scheduled_at IS NULL OR scheduled_at <= now()))), 0),
                  (SELECT count(*) FROM procrastinate_workers
                   WHERE last_heartbeat > now() - interval '1 minute')
           FROM procrastinate_jobs j
           LEFT JOIN LATERAL (SELECT min(at) AS at FROM procrastinate_events
                              WHERE job_id = j.id AND type = 'deferred') e ON true
           WHERE status IN ('todo', 'doing', 'failed')"""
    ).fetchone()
    assert row is not None
    return JobQueue(int(row[0]), int(row[1]), int(row[2]), float(row[3]), int(row[4]))

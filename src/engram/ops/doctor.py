"""`engram doctor`: check a deployment against what Engram needs, and say how to fix it.

Each check gives pass, warn (works, but not as it should in production) or fail (Engram
will refuse to start, leak across tenants, or lose data). Only reads: nothing is
changed, no key file is created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg

from engram.config import Settings
from engram.errors import EngramError
from engram.ops.recommend import QUEUE_CONNECTIONS, SAMPLER_CONNECTIONS
from engram.store import inspect, migrate
from engram.store.pooler import behind_transaction_pooler, dialled_and_server_port

__all__ = ["Check", "Status", "Topology", "run_checks"]

logger = logging.getLogger(__name__)

Status = Literal["pass", "warn", "fail"]
MIN_SERVER = 140000
MIN_PGVECTOR = (0, 7)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Topology:
    """How many processes share the database (the Helm chart's replicas)."""

    api_replicas: int = 3
    worker_replicas: int = 2


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def run_checks(
    settings: Settings,
    dsn: str,
    *,
    embedder_id: str,
    dimensions: int,
    topology: Topology | None = None,
) -> list[Check]:
    """Every check, in the order a person would fix them."""
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10, prepare_threshold=None)
    except psycopg.OperationalError as exc:
        return [
            Check(
                "database reachable",
                "fail",
                str(exc).strip().splitlines()[0],
                "check --database-url / ENGRAM_DATABASE_URL, the network and that PostgreSQL runs",
            )
        ]
    checks = [Check("database reachable", "pass", f"connected as {conn.info.user}")]
    with conn:
        server = inspect.server_info(conn)
        steps: list[tuple[str, Callable[[], list[Check]]]] = [
            ("server", lambda: _server(server)),
            ("TLS to the database", lambda: _tls(server, conn)),
            ("migrations", lambda: _schema(conn, dsn, embedder_id, dimensions)),
            ("app role", lambda: _roles(conn)),
            ("row-level security", lambda: _rls(conn)),
            ("vector indexes", lambda: _vectors(conn, dimensions)),
            ("autovacuum", lambda: _autovacuum(server, conn, settings)),
            ("connections", lambda: _connections(server, settings, topology or Topology(), conn)),
            ("job queue", lambda: _jobs(conn)),
        ]
        for name, step in steps:
            try:
                checks.extend(step())
            except psycopg.Error as exc:  # a check that cannot run is itself a finding
                checks.append(
                    Check(
                        name,
                        "fail",
                        str(exc).strip().splitlines()[0],
                        "run doctor with the app role's DSN; see the error",
                    )
                )
    checks.extend(_keys(settings))
    return checks


# Vector columns only ever compared within one user's rows, by an exact scan: an index
# there would cost every insert and serve no query (migration 0011 dropped it).
_EXACT_ONLY = {("entities", "name_embedding")}


def _server(s: inspect.ServerInfo) -> list[Check]:
    out = [
        Check("server version", "pass", s.version)
        if s.version_num >= MIN_SERVER
        else Check(
            "server version",
            "fail",
            f"{s.version} (14 or later needed)",
            "upgrade PostgreSQL to 14 or later (15+ recommended)",
        )
    ]
    if s.pgvector is None:
        out.append(
            Check(
                "pgvector",
                "fail",
                "the vector extension is not installed",
                "as an administrator: CREATE EXTENSION vector; (Azure: allow-list "
                "VECTOR in azure.extensions first)",
            )
        )
    elif _version(s.pgvector) < MIN_PGVECTOR:
        out.append(
            Check(
                "pgvector",
                "fail",
                f"{s.pgvector} (0.7 or later needed)",
                "ALTER EXTENSION vector UPDATE; after installing a newer pgvector",
            )
        )
    else:
        out.append(Check("pgvector", "pass", s.pgvector))
    return out


def _tls(s: inspect.ServerInfo, conn: psycopg.Connection[Any]) -> list[Check]:
    if s.ssl:
        return [Check("TLS to the database", "pass", "this connection is encrypted")]
    host = conn.info.host
    if s.unix_socket or host in ("127.0.0.1", "::1", "localhost"):
        return [Check("TLS to the database", "pass", "local connection (no network)")]
    return [
        Check(
            "TLS to the database",
            "warn",
            f"the connection to {host} is not encrypted",
            "add sslmode=require (or verify-full) to the DSN",
        )
    ]


def _schema(
    conn: psycopg.Connection[Any], dsn: str, embedder_id: str, dimensions: int
) -> list[Check]:
    if not migrate.has_schema(conn):
        return [
            Check(
                "migrations",
                "fail",
                "the database has no Engram schema",
                "run `engram migrate --database-url OWNER_DSN`",
            )
        ]
    pending = migrate.pending_migrations(dsn)
    out = [
        Check(
            "migrations",
            "fail",
            f"not applied: {', '.join(pending)}",
            "run `engram migrate --database-url OWNER_DSN` (the Helm chart's hook does)",
        )
        if pending
        else Check("migrations", "pass", "all applied")
    ]
    meta = migrate.read_meta(conn)
    if meta is None:
        out.append(
            Check("embedder", "fail", "engram_meta has no vector settings", "run `engram migrate`")
        )
    elif meta.dimensions != dimensions:
        out.append(
            Check(
                "embedder",
                "fail",
                f"database holds {meta.dimensions}-d vectors of {meta.embedder_id}; "
                f"configured embedder {embedder_id} makes {dimensions}-d",
                "configure the original embedder, or re-embed with `engram reembed`",
            )
        )
    elif meta.embedder_id != embedder_id:
        out.append(
            Check(
                "embedder",
                "warn",
                f"database embedded with {meta.embedder_id}, configured {embedder_id} "
                "(same dimensions: search quality suffers)",
                "configure the original embedder, or re-embed",
            )
        )
    else:
        out.append(
            Check(
                "embedder",
                "pass",
                f"{embedder_id}, {dimensions} dimensions, {meta.index} {meta.params}",
            )
        )
    return out


def _roles(conn: psycopg.Connection[Any]) -> list[Check]:
    r = inspect.role_info(conn)
    problems = [w for w, bad in (("SUPERUSER", r.superuser), ("BYPASSRLS", r.bypassrls)) if bad]
    if problems:
        return [
            Check(
                "app role",
                "fail",
                f"{r.name} has {' and '.join(problems)}: Row-Level Security does not "
                "apply to it, every tenant sees every row",
                f"connect as a plain role: ALTER ROLE {r.name} NOSUPERUSER NOBYPASSRLS; "
                "(or use the engram_app role)",
            )
        ]
    if r.owned_tables:
        return [
            Check(
                "app role",
                "fail",
                f"{r.name} owns {', '.join(r.owned_tables[:5])}: an owner may turn "
                "Row-Level Security off and alter the schema",
                "serve as the app role and migrate as the owner role (docs/deployment.md, "
                "'External PostgreSQL')",
            )
        ]
    return [Check("app role", "pass", f"{r.name}: no SUPERUSER, no BYPASSRLS, owns no table")]


def _rls(conn: psycopg.Connection[Any]) -> list[Check]:
    tables = inspect.tenant_tables(conn)
    if not tables:
        return [Check("row-level security", "fail", "no tenant tables found", "run migrations")]
    bad = []
    for t in tables:
        missing = [
            w
            for w, ok in (
                ("not enabled", t.rls_enabled),
                ("not forced", t.rls_forced),
                ("no policy", t.policies > 0),
            )
            if not ok
        ]
        if missing:
            bad.append(f"{t.name} ({', '.join(missing)})")
    if bad:
        return [
            Check(
                "row-level security",
                "fail",
                "; ".join(bad),
                "as the owner: SELECT engram_isolate_tenants('<table>'); or "
                "ALTER TABLE <table> ENABLE/FORCE ROW LEVEL SECURITY",
            )
        ]
    return [
        Check(
            "row-level security", "pass", f"enabled and forced on all {len(tables)} tenant tables"
        )
    ]


def _vectors(conn: psycopg.Connection[Any], dimensions: int) -> list[Check]:
    meta = migrate.read_meta(conn)
    cols = inspect.vector_columns(conn)
    if not cols:
        return [Check("vector indexes", "fail", "no vector columns found", "run migrations")]
    problems: list[str] = []
    by_column: dict[tuple[str, str], list[inspect.VectorColumn]] = {}
    for c in cols:
        by_column.setdefault((c.table, c.column), []).append(c)
    for (table, column), rows in by_column.items():
        where = f"{table}.{column}"
        if rows[0].dimensions != dimensions:
            problems.append(f"{where} is vector({rows[0].dimensions}), not {dimensions}")
        indexes = [r for r in rows if r.index is not None]
        if not indexes:
            if (table, column) not in _EXACT_ONLY:
                problems.append(f"{where} has no vector index")
            continue
        for r in indexes:
            if not r.valid:
                problems.append(f"{r.index} is INVALID (a failed CREATE INDEX CONCURRENTLY)")
            if meta is not None and r.method != meta.index:
                problems.append(f"{r.index} is {r.method}, engram_meta says {meta.index}")
    if problems:
        return [
            Check(
                "vector indexes",
                "fail",
                "; ".join(problems),
                "re-run `engram migrate` for a missing index; REINDEX INDEX "
                "CONCURRENTLY <index> for an invalid one (maintenance_work_mem large "
                "enough to hold it speeds the build)",
            )
        ]
    names = sorted({f"{c.index} ({c.method})" for c in cols if c.index})
    return [Check("vector indexes", "pass", ", ".join(names))]


def _autovacuum(
    s: inspect.ServerInfo, conn: psycopg.Connection[Any], settings: Settings
) -> list[Check]:
    if not s.autovacuum:
        return [
            Check(
                "autovacuum",
                "fail",
                "autovacuum is off on the server",
                "set autovacuum = on: without it dead tuples and bloat grow "
                "without bound and HNSW scans slow down",
            )
        ]
    want = str(settings.autovacuum.vacuum_scale_factor)
    tables = inspect.tenant_tables(conn)
    off = [t.name for t in tables if t.reloptions.get("autovacuum_enabled") == "false"]
    drift = [
        t.name
        for t in tables
        if float(t.reloptions.get("autovacuum_vacuum_scale_factor", "0.2")) != float(want)
    ]
    dead = [
        f"{t.name} {t.dead / t.live:.0%}"
        for t in tables
        if t.live >= 1000 and t.dead > 0.1 * t.live
    ]
    if off:
        return [
            Check(
                "autovacuum",
                "fail",
                f"turned off on {', '.join(off)}",
                "ALTER TABLE <table> RESET (autovacuum_enabled);",
            )
        ]
    if drift or dead:
        detail = "; ".join(
            ([f"vacuum scale factor is not {want} on {', '.join(drift)}"] if drift else [])
            + ([f"dead tuples above 10%: {', '.join(dead)}"] if dead else [])
        )
        return [
            Check(
                "autovacuum",
                "warn",
                detail,
                "ALTER TABLE <table> SET (autovacuum_vacuum_scale_factor = "
                f"{want}); VACUUM (ANALYZE) the tables named",
            )
        ]
    return [Check("autovacuum", "pass", f"on; scale factor {want} on every tenant table")]


def _connections(
    s: inspect.ServerInfo, settings: Settings, t: Topology, conn: psycopg.Connection[Any]
) -> list[Check]:
    pooler = behind_transaction_pooler(conn, settings.pool.pooler)
    dialled, port = dialled_and_server_port(conn)
    out = [
        Check(
            "connection pooler",
            "pass",
            f"transaction pooler assumed (DSN port {dialled}, PostgreSQL port {port}): "
            "no server-side prepared statements, workers poll for jobs",
        )
        if pooler
        else Check(
            "connection pooler",
            "pass",
            f"none seen (PostgreSQL answers on the DSN's port {dialled})",
            ""
            if settings.pool.pooler == "none"
            else "behind a pooler on the same port: set pool.pooler: transaction",
        )
    ]
    per_api = settings.pool.max_size + QUEUE_CONNECTIONS + SAMPLER_CONNECTIONS
    per_worker = settings.pool.max_size + QUEUE_CONNECTIONS
    need = t.api_replicas * per_api + t.worker_replicas * per_worker
    usable = s.max_connections - s.reserved_connections
    detail = (
        f"{t.api_replicas} API x {per_api} + {t.worker_replicas} workers x {per_worker}"
        f" = {need} of {usable} usable (max_connections {s.max_connections}); "
        f"{s.connections} open now"
    )
    if pooler:
        out.append(Check("max_connections", "pass", detail + "; PgBouncer multiplexes them"))
    elif need > usable:
        out.append(
            Check(
                "max_connections",
                "fail",
                detail,
                "lower pool.max_size, raise max_connections, or put PgBouncer in "
                "front (Helm pgbouncer.enabled); `engram size` computes all three",
            )
        )
    elif need > 0.8 * usable:
        out.append(
            Check(
                "max_connections",
                "warn",
                detail + " (over 80%)",
                "leave headroom for rolling updates: lower pool.max_size or raise max_connections",
            )
        )
    else:
        out.append(Check("max_connections", "pass", detail))
    return out


def _jobs(conn: psycopg.Connection[Any]) -> list[Check]:
    q = inspect.job_queue(conn)
    if q is None:
        return [
            Check("job queue", "fail", "the job queue's tables are missing", "run `engram migrate`")
        ]
    detail = (
        f"{q.todo} waiting (oldest {q.oldest_todo_s:.0f} s), {q.doing} running, "
        f"{q.failed} failed, {q.live_workers} live worker(s)"
    )
    if q.todo and q.oldest_todo_s > 600 and q.live_workers == 0:
        return [
            Check(
                "job queue",
                "fail",
                detail + ": no worker is taking jobs",
                "start workers (`engram worker`, Helm worker.replicas > 0) and check their logs",
            )
        ]
    if q.todo and q.oldest_todo_s > 600:
        return [
            Check(
                "job queue",
                "warn",
                detail + ": falling behind",
                "add workers or worker.concurrency",
            )
        ]
    if q.failed:
        return [
            Check(
                "job queue",
                "warn",
                detail,
                "`engram jobs list --status failed` shows why; `engram jobs retry ID`",
            )
        ]
    return [Check("job queue", "pass", detail)]


def _keys(settings: Settings) -> list[Check]:
    """Wrap and unwrap a throwaway data key through the configured key provider."""
    c = settings.crypto
    if not c.enabled:
        return [
            Check(
                "key provider",
                "warn",
                "encryption is off (crypto.enabled: false)",
                "protected fields are stored in plaintext; turn crypto.enabled on",
            )
        ]
    if c.provider == "local":
        path = c.local.key_file or Path(settings.data_dir).expanduser() / "keys" / "kek.json"
        if not path.exists():
            return [
                Check(
                    "key provider",
                    "warn",
                    f"local key file {path} does not exist yet",
                    "it is created on first use; with several pods, give every pod the "
                    "same file (crypto.local.key_file from a Secret) or use a KMS",
                )
            ]
    from engram.crypto.providers import build_provider

    try:
        provider = build_provider(c, Path(settings.data_dir).expanduser())
        try:
            dek = os.urandom(32)
            if provider.unwrap(provider.wrap(dek)) != dek:
                return [
                    Check(
                        "key provider",
                        "fail",
                        f"{c.provider}: unwrap returned another key",
                        "check the provider's key configuration",
                    )
                ]
            kek = provider.current_kek()
        finally:
            provider.close()
    except EngramError as exc:
        return [Check("key provider", "fail", f"{c.provider}: {exc.message}", exc.hint or "")]
    return [Check("key provider", "pass", f"{c.provider}: wrap/unwrap round trip with {kek}")]

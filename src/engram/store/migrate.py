"""Versioned migrations (``migrations/NNNN_name.sql``), role bootstrap and the meta check.

Migrations run as the owner role, under an advisory lock so that several replicas
starting at once apply each file exactly once. The vector dimensions and index
parameters are fixed by the first migration and recorded in ``engram_meta``; later
migrations take them from there, never from the current config.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from engram.config import Settings
from engram.errors import ConfigError, SchemaMismatchError, UnavailableError
from engram.store.pooler import behind_transaction_pooler

__all__ = [
    "VectorMeta",
    "bootstrap_embedded",
    "check_meta",
    "has_schema",
    "migrate",
    "pending_migrations",
    "pgvector_version_async",
    "read_meta",
    "read_meta_async",
]

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x656E6772  # "engr"


@dataclass(frozen=True)
class VectorMeta:
    """What the database was built for: the embedder and its vector index."""

    embedder_id: str
    dimensions: int
    index: str
    params: dict[str, int]

    @classmethod
    def from_settings(cls, settings: Settings, embedder_id: str, dimensions: int) -> VectorMeta:
        v = settings.vector
        params = (
            {"m": v.hnsw_m, "ef_construction": v.hnsw_ef_construction}
            if v.index == "hnsw"
            else {"lists": v.ivfflat_lists}
        )
        return cls(embedder_id, dimensions, v.index, params)


# Migration 2 is the job queue's own schema, taken from the installed procrastinate
# (pinned in pyproject.toml), so that enqueueing can join Engram's transactions.
_PROCRASTINATE = (2, "0002_procrastinate_schema")


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("engram.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    from procrastinate.schema import SchemaManager

    found.append((*_PROCRASTINATE, SchemaManager.get_schema()))
    return sorted(found)


def bootstrap_embedded(superuser_dsn: str, owner: str, app: str, dbname: str) -> None:
    """Create the owner and app roles, the database and pgvector (embedded mode only)."""
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        for role, extra in ((owner, sql.SQL("")), (app, sql.SQL(" NOBYPASSRLS"))):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE{}").format(
                        sql.Identifier(role), extra
                    )
                )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(owner)
                )
            )
    db_dsn = psycopg.conninfo.make_conninfo(superuser_dsn, dbname=dbname)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))


def _ensure_history(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


def _applied(conn: psycopg.Connection[Any]) -> dict[int, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(v): str(c) for v, c in rows}


def read_meta(conn: psycopg.Connection[Any]) -> VectorMeta | None:
    """The recorded vector settings, or None on a database never migrated."""
    exists = conn.execute("SELECT to_regclass('engram_meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT value FROM engram_meta WHERE key = 'vector'").fetchone()
    if row is None:
        return None
    v = row[0]
    return VectorMeta(v["embedder_id"], int(v["dimensions"]), v["index"], dict(v["params"]))


def _template_args(meta: VectorMeta, settings: Settings) -> dict[str, sql.Composable]:
    av = settings.autovacuum
    autovacuum = sql.SQL(
        "autovacuum_vacuum_scale_factor = {}, autovacuum_analyze_scale_factor = {}, "
        "autovacuum_vacuum_cost_delay = {}"
    ).format(
        sql.Literal(av.vacuum_scale_factor),
        sql.Literal(av.analyze_scale_factor),
        sql.Literal(av.vacuum_cost_delay),
    )
    return {
        "dims": sql.Literal(meta.dimensions),
        "vector_index": vector_index_sql(meta, "messages", "embedding"),
        "entity_index": vector_index_sql(meta, "entities", "name_embedding"),
        "fact_index": vector_index_sql(meta, "facts", "fact_embedding"),
        "autovacuum": autovacuum,
        "app_role": sql.Identifier(settings.app_role),
        "default_tenant": sql.Literal(settings.default_tenant),
        # PLAIN keeps a vector in its heap row; past 1536 dimensions (6 KB) a row could
        # outgrow a page, so MAIN lets PostgreSQL move it out as a last resort.
        "vector_storage": sql.SQL("PLAIN" if meta.dimensions <= 1536 else "MAIN"),
    }


def vector_index_sql(meta: VectorMeta, table: str, column: str) -> sql.Composed:
    """CREATE INDEX for an embedding column with the recorded index type and parameters."""
    name = sql.Identifier(f"{table}_{column}_idx")
    if meta.index == "hnsw":
        return sql.SQL(
            "CREATE INDEX {} ON {} USING hnsw ({} vector_cosine_ops) "
            "WITH (m = {}, ef_construction = {});"
        ).format(
            name,
            sql.Identifier(table),
            sql.Identifier(column),
            sql.Literal(meta.params["m"]),
            sql.Literal(meta.params["ef_construction"]),
        )
    return sql.SQL(
        "CREATE INDEX {} ON {} USING ivfflat ({} vector_cosine_ops) WITH (lists = {});"
    ).format(name, sql.Identifier(table), sql.Identifier(column), sql.Literal(meta.params["lists"]))


def pending_migrations(owner_dsn: str) -> list[str]:
    """Names of the migration files not yet applied to the database."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        applied = _applied(conn) if has_schema(conn) else {}
    return [name for version, name, _ in _migration_files() if version not in applied]


def migrate(owner_dsn: str, settings: Settings, embedder_id: str, dimensions: int) -> list[str]:
    """Apply every pending migration; return the names applied."""
    done: list[str] = []
    try:
        conn = psycopg.connect(owner_dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise UnavailableError(
            f"cannot connect as the migration (owner) role: {str(exc).strip()}",
            hint="check --database-url / ENGRAM_MIGRATE_DATABASE_URL",
        ) from exc
    with conn:
        # A session advisory lock through a transaction pooler could be taken on one
        # server connection and released on another, and stay held for good.
        if behind_transaction_pooler(conn, "auto"):
            raise ConfigError(
                "the migration DSN goes through a connection pooler (its port is not PostgreSQL's)",
                hint="migrate with a direct DSN of the owner role, not through PgBouncer",
            )
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _ensure_history(conn)
            applied = _applied(conn)
            meta = read_meta(conn) or VectorMeta.from_settings(settings, embedder_id, dimensions)
            args = _template_args(meta, settings)
            for version, name, text in _migration_files():
                checksum = hashlib.sha256(text.encode()).hexdigest()
                if version in applied:
                    if applied[version] != checksum:
                        logger.warning("migration %s changed since it was applied", name)
                    continue
                logger.info("applying migration %s", name)
                with conn.transaction():
                    if (version, name) == _PROCRASTINATE:
                        conn.execute(text.encode())  # verbatim: not an Engram template
                    else:
                        conn.execute(sql.SQL(text).format(**args))
                    if version == 1:
                        _write_meta(conn, meta)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (version, name, checksum),
                    )
                done.append(name)
            _grant(conn, settings.app_role)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done


def _write_meta(conn: psycopg.Connection[Any], meta: VectorMeta) -> None:
    value = {
        "embedder_id": meta.embedder_id,
        "dimensions": meta.dimensions,
        "index": meta.index,
        "params": meta.params,
    }
    conn.execute(
        "INSERT INTO engram_meta (key, value) VALUES ('vector', %s)",
        (Jsonb(value),),
    )


def _grant(conn: psycopg.Connection[Any], app_role: str) -> None:
    role = sql.Identifier(app_role)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app_role,)).fetchone()
    if not exists:
        raise UnavailableError(
            f"the app role {app_role!r} does not exist",
            hint="create it as docs/deployment.md shows, or set ENGRAM_APP_ROLE",
        )
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
    # Everything in the schema (Engram's tables and the job queue's), then take back
    # writes to the two tables only migrations may change.
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
            role
        )
    )
    conn.execute(
        sql.SQL("REVOKE INSERT, UPDATE, DELETE ON engram_meta, schema_migrations FROM {}").format(
            role
        )
    )
    conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
    # The audit log is append-only: the app may insert and read, never change or remove.
    if conn.execute("SELECT to_regclass('audit_log') IS NOT NULL").fetchone() == (True,):
        conn.execute(sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {}").format(role))


def check_meta(conn: psycopg.Connection[Any], embedder_id: str, dimensions: int) -> VectorMeta:
    """Refuse to run when the database was built for other vector dimensions."""
    meta = read_meta(conn)
    if meta is None:
        raise SchemaMismatchError(
            "the database has no Engram schema yet", hint="run `engram migrate` first"
        )
    if meta.dimensions != dimensions:
        raise SchemaMismatchError(
            f"the database stores {meta.dimensions}-dimensional vectors "
            f"(embedder {meta.embedder_id}) but the configured embedder {embedder_id} "
            f"produces {dimensions}-dimensional vectors",
            hint="configure the original embedder, or re-embed the data with "
            "`engram reembed` (a later capability) before switching",
        )
    if meta.embedder_id != embedder_id:
        logger.warning(
            "the database was embedded with %s; the configured embedder is %s (same dimensions)",
            meta.embedder_id,
            embedder_id,
        )
    return meta


async def read_meta_async(conn: Any) -> VectorMeta | None:
    """read_meta for an async connection with dict rows (the readiness probe)."""
    cur = await conn.execute("SELECT value FROM engram_meta WHERE key = 'vector'")
    row = await cur.fetchone()
    if row is None:
        return None
    v = row["value"]
    return VectorMeta(v["embedder_id"], int(v["dimensions"]), v["index"], dict(v["params"]))


def has_schema(conn: psycopg.Connection[Any]) -> bool:
    """True once the first migration has run (the history table exists)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


async def pgvector_version_async(conn: Any) -> str | None:
    """The installed pgvector version, or None (the readiness probe)."""
    cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    row = await cur.fetchone()
    return str(row["extversion"]) if row else None

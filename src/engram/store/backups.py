"""What backup and restore ask the database: is it empty, and how many rows it holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["has_engram_schema", "record_run", "row_counts"]

_TABLES = (
    "users",
    "sessions",
    "messages",
    "episodes",
    "entities",
    "facts",
    "archives",
    "erasure_receipts",
)


def has_engram_schema(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per Engram table, all tenants (needs a role that bypasses row security)."""
    out: dict[str, int] = {}
    for table in _TABLES:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if exists and exists[0]:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            out[table] = int(row[0]) if row else 0
    return out


def record_run(
    conn: psycopg.Connection[Any],
    started_at: datetime,
    status: str,
    *,
    size: int | None = None,
    file: str | None = None,
    error: str | None = None,
) -> None:
    """Remember how a backup ended (what the backup alerts see through /metrics)."""
    conn.execute(
        """INSERT INTO backup_runs (started_at, status, bytes, file, error)
           VALUES (%s, %s, %s, %s, %s)""",
        (started_at, status, size, file, error),
    )

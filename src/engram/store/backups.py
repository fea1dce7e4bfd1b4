"""What backup and restore ask the database: is it empty, and how many rows it holds."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

__all__ = ["has_engram_schema", "row_counts"]

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

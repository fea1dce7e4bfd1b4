"""Tenants: the registry the platform admin manages (no RLS: it is the list itself)."""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql
from psycopg.errors import UniqueViolation

from engram.errors import ConflictError, NotFoundError, ValidationError
from engram.store.db import Conn

__all__ = ["ID_PATTERN", "create", "get", "list_all", "set_status", "status"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_COLUMNS = sql.SQL("id, name, status, created_at, updated_at")


async def create(conn: Conn, tenant_id: str, name: str | None = None) -> dict[str, Any]:
    if not ID_PATTERN.match(tenant_id):
        raise ValidationError(
            f"invalid tenant id {tenant_id!r}",
            field="id",
            hint="use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    try:
        async with conn.transaction():
            cur = await conn.execute(
                sql.SQL("INSERT INTO tenants (id, name) VALUES (%s, %s) RETURNING {}").format(
                    _COLUMNS
                ),
                (tenant_id, name or tenant_id),
            )
            row = await cur.fetchone()
    except UniqueViolation as exc:
        raise ConflictError(
            f"tenant {tenant_id!r} already exists",
            field="id",
            hint="choose another id",
        ) from exc
    assert row is not None
    return row


async def get(conn: Conn, tenant_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM tenants WHERE id = %s").format(_COLUMNS), (tenant_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("tenant", tenant_id)
    return row


async def status(conn: Conn, tenant_id: str) -> str | None:
    """'active', 'disabled', or None for a tenant that does not exist."""
    cur = await conn.execute("SELECT status FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    return None if row is None else str(row["status"])


async def list_all(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM tenants ORDER BY created_at, id").format(_COLUMNS)
    )
    return await cur.fetchall()


async def set_status(conn: Conn, tenant_id: str, new_status: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL(
            "UPDATE tenants SET status = %s, updated_at = now() WHERE id = %s RETURNING {}"
        ).format(_COLUMNS),
        (new_status, tenant_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("tenant", tenant_id)
    return row

"""API keys: hashes only, scoped to a tenant and a role."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from engram.errors import NotFoundError
from engram.store.db import Conn

__all__ = ["create", "list_for_tenant", "lookup", "revoke"]

_COLUMNS = sql.SQL(
    "tenant_id, key_id, name, role, read_protected, created_at, created_by, expires_at, revoked_at"
)


async def create(
    conn: Conn,
    tenant: str,
    *,
    key_id: str,
    digest: bytes,
    name: str,
    role: str,
    read_protected: bool,
    created_by: str,
    expires_at: datetime | None,
) -> dict[str, Any]:
    """Insert a key in the tenant of the current transaction."""
    cur = await conn.execute(
        sql.SQL("""INSERT INTO api_keys (tenant_id, key_id, name, role, read_protected,
                                  secret_sha256, created_by, expires_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {}""").format(_COLUMNS),
        (tenant, key_id, name, role, read_protected, digest, created_by, expires_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def lookup(conn: Conn, key_id: str) -> dict[str, Any] | None:
    """The key with this id and its tenant's status, before any tenant is known.

    Runs in its own transaction: the lookup policy shows only the row whose id is set.
    """
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.api_key_id', %s, true)", (key_id,))
        cur = await conn.execute(
            sql.SQL("""SELECT {}, secret_sha256,
                       expires_at IS NOT NULL AND expires_at <= now() AS expired,
                       (SELECT status FROM tenants t WHERE t.id = k.tenant_id) AS tenant_status
                FROM api_keys k WHERE key_id = %s""").format(_COLUMNS),
            (key_id,),
        )
        return await cur.fetchone()


async def list_for_tenant(conn: Conn) -> list[dict[str, Any]]:
    """Every key of the tenant of the current transaction (never the hashes)."""
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM api_keys ORDER BY created_at, key_id").format(_COLUMNS)
    )
    return await cur.fetchall()


async def revoke(conn: Conn, key_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE key_id = %s RETURNING {}""").format(_COLUMNS),
        (key_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("API key", key_id)
    return row

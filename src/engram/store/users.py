"""Users: the people (or agents' principals) whose memory Engram keeps."""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb

from engram.errors import ConflictError, NotFoundError
from engram.store.db import Conn

__all__ = ["add", "count", "delete", "get", "list_ordered", "update"]

_COLUMNS = sql.SQL("""user_id, id, uuid, email, first_name, last_name, metadata,
    created_at, updated_at,
    (SELECT count(*) FROM sessions s
      WHERE s.tenant_id = u.tenant_id AND s.user_id = u.user_id) AS session_count""")


async def add(conn: Conn, tenant: str, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO users (tenant_id, user_id, email, first_name, last_name, metadata)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                (
                    tenant,
                    user_id,
                    fields.get("email"),
                    fields.get("first_name"),
                    fields.get("last_name"),
                    Jsonb(fields.get("metadata") or {}),
                ),
            )
    except UniqueViolation as exc:
        raise ConflictError(
            f"user {user_id!r} already exists", field="user_id", hint="use another user_id"
        ) from exc
    return await get(conn, user_id)


async def get(conn: Conn, user_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM users u WHERE user_id = %s").format(_COLUMNS), (user_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("user", user_id)
    return row


async def exists(conn: Conn, user_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
    return await cur.fetchone() is not None


async def update(conn: Conn, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Set the given fields; metadata is merged key by key (as Zep does)."""
    cur = await conn.execute(
        """UPDATE users SET
               email = coalesce(%(email)s, email),
               first_name = coalesce(%(first_name)s, first_name),
               last_name = coalesce(%(last_name)s, last_name),
               metadata = metadata || coalesce(%(metadata)s, jsonb_build_object()),
               updated_at = now()
           WHERE user_id = %(user_id)s RETURNING user_id""",
        {
            "user_id": user_id,
            "email": fields.get("email"),
            "first_name": fields.get("first_name"),
            "last_name": fields.get("last_name"),
            "metadata": Jsonb(fields["metadata"]) if fields.get("metadata") is not None else None,
        },
    )
    if await cur.fetchone() is None:
        raise NotFoundError("user", user_id)
    return await get(conn, user_id)


async def delete(conn: Conn, user_id: str) -> None:
    """Delete the user with their sessions and messages."""
    cur = await conn.execute("DELETE FROM users WHERE user_id = %s RETURNING 1", (user_id,))
    if await cur.fetchone() is None:
        raise NotFoundError("user", user_id)


async def list_ordered(conn: Conn, *, offset: int, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM users u ORDER BY id LIMIT %s OFFSET %s").format(_COLUMNS),
        (limit, offset),
    )
    return await cur.fetchall()


async def count(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM users")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0

"""Sessions: one conversation of one user."""

from __future__ import annotations

from typing import Any, Literal

from psycopg import sql
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb

from engram.errors import ConflictError, NotFoundError
from engram.store.db import Conn

__all__ = ["add", "count", "get", "list_for_user", "list_ordered", "touch", "update"]

_COLUMNS = sql.SQL("""session_id, id, uuid, user_id, metadata, fact_rating_instruction,
    created_at, updated_at, ended_at""")

OrderBy = Literal["created_at", "updated_at", "user_id", "session_id", "id"]


async def add(
    conn: Conn,
    tenant: str,
    session_id: str,
    user_id: str | None,
    metadata: dict[str, Any] | None,
    fact_rating_instruction: dict[str, Any] | None,
) -> dict[str, Any]:
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO sessions (tenant_id, session_id, user_id, metadata,
                                         fact_rating_instruction)
                   VALUES (%s, %s, %s, %s, %s)""",
                (
                    tenant,
                    session_id,
                    user_id,
                    Jsonb(metadata or {}),
                    Jsonb(fact_rating_instruction) if fact_rating_instruction else None,
                ),
            )
    except UniqueViolation as exc:
        raise ConflictError(
            f"session {session_id!r} already exists",
            field="session_id",
            hint="use another session_id, or update the existing session",
        ) from exc
    return await get(conn, session_id)


async def get(conn: Conn, session_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM sessions WHERE session_id = %s").format(_COLUMNS), (session_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("session", session_id)
    return row


async def update(
    conn: Conn,
    session_id: str,
    metadata: dict[str, Any] | None,
    fact_rating_instruction: dict[str, Any] | None,
) -> dict[str, Any]:
    """Merge metadata key by key and replace the fact rating instruction when given."""
    cur = await conn.execute(
        """UPDATE sessions SET
               metadata = metadata || coalesce(%s, jsonb_build_object()),
               fact_rating_instruction = coalesce(%s, fact_rating_instruction),
               updated_at = now()
           WHERE session_id = %s RETURNING session_id""",
        (
            Jsonb(metadata) if metadata is not None else None,
            Jsonb(fact_rating_instruction) if fact_rating_instruction else None,
            session_id,
        ),
    )
    if await cur.fetchone() is None:
        raise NotFoundError("session", session_id)
    return await get(conn, session_id)


async def touch(conn: Conn, session_id: str) -> None:
    await conn.execute(
        "UPDATE sessions SET updated_at = now() WHERE session_id = %s", (session_id,)
    )


async def list_for_user(conn: Conn, user_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM sessions WHERE user_id = %s ORDER BY id").format(_COLUMNS),
        (user_id,),
    )
    return await cur.fetchall()


async def list_ordered(
    conn: Conn, *, offset: int, limit: int, order_by: OrderBy, ascending: bool
) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT {} FROM sessions ORDER BY {} {}, id {} LIMIT %s OFFSET %s").format(
        _COLUMNS,
        sql.Identifier(order_by),
        sql.SQL("ASC" if ascending else "DESC"),
        sql.SQL("ASC" if ascending else "DESC"),
    )
    cur = await conn.execute(query, (limit, offset))
    return await cur.fetchall()


async def count(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM sessions")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0

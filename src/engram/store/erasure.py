"""Erasure of one user: receipts that outlive it, and the deletes, counted as they happen."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = [
    "add_counts",
    "complete",
    "delete_data_keys",
    "delete_jobs",
    "delete_rest",
    "delete_session",
    "latest_receipt",
    "receipt",
    "sessions_of",
    "start",
    "user_exists",
]

_ADD = sql.SQL("""counts = (
    SELECT coalesce(jsonb_object_agg(k, coalesce((counts ->> k)::bigint, 0)
                                        + coalesce((%(add)s::jsonb ->> k)::bigint, 0)),
                    jsonb_build_object())
    FROM jsonb_object_keys(counts || %(add)s::jsonb) AS k)""")


async def start(
    conn: Conn, tenant: str, user_id: str, user_hash: str, actor: str
) -> dict[str, Any]:
    """The running receipt of this user's erasure, or a new one."""
    await conn.execute(
        """INSERT INTO erasure_receipts
               (tenant_id, receipt_id, user_id, user_id_sha256, state, requested_by)
           VALUES (%s, %s, %s, %s, 'running', %s)
           ON CONFLICT (tenant_id, user_id_sha256) WHERE state = 'running' DO NOTHING""",
        (tenant, uuidlib.uuid4(), user_id, user_hash, actor),
    )
    cur = await conn.execute(
        "SELECT * FROM erasure_receipts WHERE user_id_sha256 = %s AND state = 'running'",
        (user_hash,),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def latest_receipt(conn: Conn, user_hash: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        """SELECT * FROM erasure_receipts WHERE user_id_sha256 = %s
           ORDER BY started_at DESC LIMIT 1""",
        (user_hash,),
    )
    return await cur.fetchone()


async def receipt(conn: Conn, receipt_id: uuidlib.UUID) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT * FROM erasure_receipts WHERE receipt_id = %s", (receipt_id,))
    return await cur.fetchone()


async def add_counts(conn: Conn, receipt_id: uuidlib.UUID, add: dict[str, int]) -> None:
    """Add what a step removed to the receipt (in the step's own transaction)."""
    if not any(add.values()):
        return
    await conn.execute(
        sql.SQL("UPDATE erasure_receipts SET {} WHERE receipt_id = %(id)s").format(_ADD),
        {"add": Jsonb(add), "id": receipt_id},
    )


async def complete(conn: Conn, receipt_id: uuidlib.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        """UPDATE erasure_receipts SET state = 'completed', completed_at = now()
           WHERE receipt_id = %s RETURNING *""",
        (receipt_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def user_exists(conn: Conn, user_id: str) -> bool:
    """True while anything of the user is left: the user row, archives or data keys."""
    cur = await conn.execute(
        """SELECT EXISTS (SELECT 1 FROM users WHERE user_id = %(u)s)
               OR EXISTS (SELECT 1 FROM archives WHERE user_id = %(u)s)
               OR EXISTS (SELECT 1 FROM data_keys WHERE user_id = %(u)s) AS present""",
        {"u": user_id},
    )
    row = await cur.fetchone()
    return bool(row and row["present"])


async def delete_jobs(conn: Conn, tenant: str, user_id: str) -> int:
    """Delete the user's extraction jobs (queued, failed or done; a running one finds its
    episode gone and does nothing)."""
    cur = await conn.execute(
        """DELETE FROM procrastinate_jobs
           WHERE status <> 'doing'
             AND (lock = %(lock)s OR (args ->> 'tenant_id' = %(t)s AND args ->> 'episode_uuid'
                  IN (SELECT uuid::text FROM episodes WHERE user_id = %(u)s)))""",
        {"lock": f"{tenant}/{user_id}", "t": tenant, "u": user_id},
    )
    return cur.rowcount


async def sessions_of(conn: Conn, user_id: str) -> list[str]:
    cur = await conn.execute(
        "SELECT session_id FROM sessions WHERE user_id = %s ORDER BY id", (user_id,)
    )
    return [r["session_id"] for r in await cur.fetchall()]


_COUNT_GRAPH = sql.SQL("""SELECT
    (SELECT count(*) FROM facts WHERE user_id = %(u)s) AS facts,
    (SELECT count(*) FROM entities WHERE user_id = %(u)s) AS entities,
    (SELECT count(*) FROM entity_mentions x JOIN entities e
        ON e.tenant_id = x.tenant_id AND e.uuid = x.entity_uuid WHERE e.user_id = %(u)s)
        AS entity_mentions""")


async def _graph(conn: Conn, user_id: str) -> dict[str, int]:
    cur = await conn.execute(_COUNT_GRAPH, {"u": user_id})
    row = await cur.fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


async def delete_session(conn: Conn, user_id: str, session_id: str) -> dict[str, int]:
    """Delete one of the user's sessions with everything under it; what went, by table."""
    before = await _graph(conn, user_id)
    cur = await conn.execute(
        """SELECT (SELECT count(*) FROM messages WHERE session_id = %(s)s) AS messages,
                  (SELECT count(*) FROM episodes WHERE session_id = %(s)s) AS episodes""",
        {"s": session_id},
    )
    row = await cur.fetchone()
    assert row is not None
    cur = await conn.execute(
        "DELETE FROM sessions WHERE session_id = %s AND user_id = %s", (session_id, user_id)
    )
    if cur.rowcount == 0:
        return {}
    after = await _graph(conn, user_id)
    gone = {k: before[k] - after[k] for k in before}
    return {
        "sessions": 1,
        "messages": int(row["messages"]),
        "episodes": int(row["episodes"]),
        **gone,
    }


async def delete_rest(conn: Conn, user_id: str) -> dict[str, int]:
    """Delete the user's remaining graph and the user row; what went, by table."""
    counts = await _graph(conn, user_id)
    cur = await conn.execute("SELECT count(*) AS n FROM messages WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    counts["messages"] = int(row["n"]) if row else 0
    # Messages written with this user id into a session of nobody (or of another user).
    await conn.execute("DELETE FROM messages WHERE user_id = %s", (user_id,))
    await conn.execute("DELETE FROM episodes WHERE user_id = %s", (user_id,))
    await conn.execute("DELETE FROM facts WHERE user_id = %s", (user_id,))
    await conn.execute("DELETE FROM entities WHERE user_id = %s", (user_id,))
    cur = await conn.execute("DELETE FROM users WHERE user_id = %s", (user_id,))
    counts["users"] = cur.rowcount
    return counts


async def delete_data_keys(conn: Conn, user_id: str) -> int:
    """Delete the user's data-key rows (every version; shredded first by the keyring)."""
    cur = await conn.execute("DELETE FROM data_keys WHERE user_id = %s", (user_id,))
    return cur.rowcount

"""Retention: tenant policies, sessions past their retention, expired-fact cleanup."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from engram.store.db import Conn

__all__ = [
    "delete_invalid_facts",
    "delete_session",
    "expired_sessions",
    "get_policy",
    "known_tenants",
    "put_policy",
]


async def get_policy(conn: Conn) -> dict[str, Any] | None:
    """The tenant's own policy row, or None (the configured defaults apply)."""
    cur = await conn.execute("SELECT * FROM retention_policies")
    return await cur.fetchone()


async def put_policy(
    conn: Conn,
    tenant: str,
    *,
    retention_days: int | None,
    action: str,
    fact_cleanup_days: int | None,
    actor: str,
) -> dict[str, Any]:
    cur = await conn.execute(
        """INSERT INTO retention_policies
               (tenant_id, retention_days, action, fact_cleanup_days, updated_by)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id) DO UPDATE SET retention_days = excluded.retention_days,
               action = excluded.action, fact_cleanup_days = excluded.fact_cleanup_days,
               updated_by = excluded.updated_by, updated_at = now()
           RETURNING *""",
        (tenant, retention_days, action, fact_cleanup_days, actor),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def expired_sessions(
    conn: Conn, cutoff: datetime, *, limit: int, skip: list[str]
) -> list[dict[str, Any]]:
    """Sessions last active before ``cutoff``, oldest first; a session restored from an
    archive since ``cutoff`` is kept for another retention period."""
    cur = await conn.execute(
        """SELECT s.session_id, s.user_id FROM sessions s
           WHERE greatest(s.updated_at, coalesce((SELECT max(m.created_at) FROM messages m
                     WHERE m.tenant_id = s.tenant_id AND m.session_id = s.session_id),
                     s.created_at)) < %(cutoff)s
             AND NOT EXISTS (SELECT 1 FROM archives a
                     WHERE a.tenant_id = s.tenant_id AND a.session_id = s.session_id
                       AND a.state = 'restored' AND a.restored_at >= %(cutoff)s)
             AND s.session_id <> ALL(%(skip)s)
           ORDER BY s.id LIMIT %(limit)s""",
        {"cutoff": cutoff, "skip": skip, "limit": limit},
    )
    return await cur.fetchall()


async def delete_session(conn: Conn, session_id: str) -> int:
    """Delete a session with its messages (provenance is cleaned by trigger); messages gone."""
    cur = await conn.execute(
        """WITH n AS (SELECT count(*) AS messages FROM messages WHERE session_id = %(s)s),
                d AS (DELETE FROM sessions WHERE session_id = %(s)s RETURNING 1)
           SELECT (SELECT messages FROM n) AS messages, (SELECT count(*) FROM d) AS sessions""",
        {"s": session_id},
    )
    row = await cur.fetchone()
    return int(row["messages"]) if row and row["sessions"] else 0


async def delete_invalid_facts(conn: Conn, cutoff: datetime) -> int:
    """Delete facts invalidated before ``cutoff``; return how many."""
    cur = await conn.execute(
        "DELETE FROM facts WHERE invalid_at IS NOT NULL AND invalid_at < %s", (cutoff,)
    )
    return cur.rowcount


async def known_tenants(conn: Conn) -> list[str]:
    """Tenants registered in a ``tenants`` table, when the database has one (issue 6);
    row-level security hides every other table's tenants from the app role."""
    cur = await conn.execute("SELECT to_regclass('tenants') IS NOT NULL AS present")
    row = await cur.fetchone()
    if not row or not row["present"]:
        return []
    try:
        async with conn.transaction():
            cur = await conn.execute("SELECT DISTINCT tenant_id::text AS t FROM tenants")
            return [r["t"] for r in await cur.fetchall()]
    except psycopg.Error:  # a tenants table of another shape: fall back to configured tenants
        return []

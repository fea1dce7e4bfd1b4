"""The audit log table: append under a per-tenant lock, read in chain order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = ["GENESIS", "append", "head", "iterate"]

GENESIS = "0" * 64  # prev_hash of each tenant's first record
_FIELDS = (
    "at", "actor", "action", "resource", "outcome", "status", "reason", "request_id",
    "client", "details",
)  # fmt: skip

# First key of the two-key advisory lock that serialises one tenant's appends.
_LOCK_CLASS = 0x61756474  # "audt"


async def append(
    conn: Conn, tenant: str, fields: dict[str, Any], make_hash: Callable[[int, str], str]
) -> tuple[int, str]:
    """Append a record to the tenant's chain inside the caller's transaction (which must
    be bound to ``tenant``); ``make_hash(seq, prev_hash)`` seals it. Return (seq, hash).
    The lock is held until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, tenant))
    cur = await conn.execute(
        "SELECT seq, hash FROM audit_log WHERE tenant_id = %s ORDER BY seq DESC LIMIT 1",
        (tenant,),
    )
    last = await cur.fetchone()
    seq, prev = (1, GENESIS) if last is None else (int(last["seq"]) + 1, str(last["hash"]))
    digest = make_hash(seq, prev)
    values = [fields.get(k) for k in _FIELDS]
    details = fields.get("details")
    values[_FIELDS.index("details")] = None if details is None else Jsonb(details)
    await conn.execute(
        """INSERT INTO audit_log (tenant_id, seq, at, actor, action, resource, outcome, status,
                                  reason, request_id, client, details, prev_hash, hash)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (tenant, seq, *values, prev, digest),
    )
    return seq, digest


async def head(conn: Conn, tenant: str) -> tuple[int, str]:
    """(length, hash of the last record) of the tenant's chain; (0, GENESIS) if empty."""
    cur = await conn.execute(
        "SELECT seq, hash FROM audit_log WHERE tenant_id = %s ORDER BY seq DESC LIMIT 1",
        (tenant,),
    )
    row = await cur.fetchone()
    return (0, GENESIS) if row is None else (int(row["seq"]), str(row["hash"]))


async def iterate(
    conn: Conn, tenant: str, *, since: Any = None, batch: int = 2000
) -> AsyncIterator[dict[str, Any]]:
    """The tenant's records in chain order (optionally from time ``since``), in batches."""
    after = 0
    while True:
        cur = await conn.execute(
            """SELECT * FROM audit_log
               WHERE tenant_id = %s AND seq > %s AND (%s::timestamptz IS NULL OR at >= %s)
               ORDER BY seq LIMIT %s""",
            (tenant, after, since, since, batch),
        )
        rows = await cur.fetchall()
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = int(rows[-1]["seq"])

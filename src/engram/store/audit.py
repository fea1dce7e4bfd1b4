"""The audit log table: append under a per-tenant lock, read in chain order."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = ["GENESIS", "append", "forget_user", "head", "iterate", "pseudonyms", "resolve"]

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


# A subject is mapped only while it exists, and its owner's row is locked (KEY SHARE)
# until the record commits, so an erasure deleting that user waits for the record and
# then removes its mapping too. Subjects that do not exist get no row (the caller uses a
# one-off pseudonym): a request naming an erased user must not write the id back.
_PSEUDONYMS = """
WITH wanted AS (
    SELECT w.kind, w.subject_id, w.fresh,
           CASE w.kind WHEN 'user' THEN w.subject_id
               ELSE coalesce(
                   (SELECT s.user_id FROM sessions s WHERE s.session_id = w.subject_id),
                   (SELECT a.user_id FROM archives a
                    WHERE a.session_id = w.subject_id AND a.state = 'archived' LIMIT 1))
           END AS owner,
           w.kind = 'session' AND (
               EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = w.subject_id)
               OR EXISTS (SELECT 1 FROM archives a
                          WHERE a.session_id = w.subject_id AND a.state = 'archived'))
               AS session_exists
    FROM unnest(%(kinds)s::text[], %(ids)s::text[], %(fresh)s::text[])
         AS w(kind, subject_id, fresh)
), live AS (
    SELECT u.user_id FROM users u
    WHERE u.user_id IN (SELECT owner FROM wanted WHERE owner IS NOT NULL)
    FOR KEY SHARE
), ins AS (
    INSERT INTO audit_subjects (tenant_id, kind, subject_id, user_id, pseudonym)
    SELECT current_setting('app.tenant_id', true), w.kind, w.subject_id, w.owner, w.fresh
    FROM wanted w
    WHERE w.owner IN (SELECT user_id FROM live) OR (w.owner IS NULL AND w.session_exists)
    ON CONFLICT (tenant_id, kind, subject_id) DO NOTHING
    RETURNING kind, subject_id, pseudonym
)
SELECT kind, subject_id, pseudonym FROM ins
UNION ALL
SELECT a.kind, a.subject_id, a.pseudonym
FROM audit_subjects a JOIN wanted w USING (kind, subject_id)
"""


def new_pseudonym(kind: str) -> str:
    return f"{kind}:{secrets.token_hex(10)}"


async def pseudonyms(conn: Conn, subjects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The pseudonym of each (kind, id) subject ("user" or "session") of the tenant the
    transaction is bound to: its lasting one while it exists, else a one-off one that
    nothing maps back. Call inside the transaction that writes the audit record."""
    wanted = sorted(set(subjects))
    if not wanted:
        return {}
    kinds, ids = [k for k, _ in wanted], [i for _, i in wanted]
    found: dict[tuple[str, str], str] = {}
    for _ in range(2):  # again if a concurrent request mapped one after our snapshot
        fresh = [new_pseudonym(kind) for kind in kinds]
        cur = await conn.execute(_PSEUDONYMS, {"kinds": kinds, "ids": ids, "fresh": fresh})
        found.update(
            {(r["kind"], r["subject_id"]): str(r["pseudonym"]) for r in await cur.fetchall()}
        )
        if len(found) == len(wanted):
            break
    return {w: found.get(w) or fresh[n] for n, w in enumerate(wanted)}


async def resolve(conn: Conn, names: Iterable[str]) -> dict[str, str]:
    """Pseudonym -> subject id, for those still mapped (their subject not erased)."""
    cur = await conn.execute(
        "SELECT pseudonym, subject_id FROM audit_subjects WHERE pseudonym = ANY(%s)",
        (sorted(set(names)),),
    )
    return {str(r["pseudonym"]): str(r["subject_id"]) for r in await cur.fetchall()}


async def forget_user(conn: Conn, user_id: str) -> int:
    """Delete the user's pseudonyms (theirs and their sessions'): the audit records that
    carry them can no longer be tied to anyone. Returns the mappings removed."""
    cur = await conn.execute(
        """DELETE FROM audit_subjects
           WHERE user_id = %(u)s OR (kind = 'user' AND subject_id = %(u)s)""",
        {"u": user_id},
    )
    return cur.rowcount

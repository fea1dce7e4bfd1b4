"""Writing audit records: ``record()`` inside any tenant-bound transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from engram.audit.chain import Entry, record_hash
from engram.audit.subjects import pseudonymize
from engram.store import audit as store
from engram.store.db import Conn, Database

__all__ = ["clean", "record", "record_now"]

logger = logging.getLogger(__name__)


def clean(value: Any) -> Any:
    """``value`` with what PostgreSQL text and jsonb refuse written as escapes: NUL as
    ``\\x00``, a lone surrogate (an undecodable byte of a request path) as ``\\udcXX``;
    into lists and dicts. A record of a request must not fail on the request's bytes."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


async def record(
    conn: Conn,
    tenant: str,
    *,
    actor: str,
    action: str,
    resource: str,
    outcome: str = "success",
    status: int | None = None,
    reason: str | None = None,
    request_id: str | None = None,
    client: str | None = None,
    details: dict[str, Any] | None = None,
    subjects: Sequence[tuple[str, str]] = (),
    at: datetime | None = None,
) -> tuple[int, str]:
    """Append one record to ``tenant``'s chain in the caller's transaction (bound to that
    tenant by ``Database.tenant``); it commits or rolls back with the caller's work.
    ``subjects`` are the (kind, id) users and sessions that ``resource`` names: each
    segment of the ``resource`` path equal to one of their ids is written as its pseudonym.
    ``at`` is when it happened (default: now). Text PostgreSQL cannot store is escaped
    (see ``clean``). Returns (seq, hash)."""
    resource = clean(resource)
    if subjects:
        resource = await pseudonymize(conn, resource, [(k, clean(i)) for k, i in subjects])
    entry = Entry(
        actor=clean(actor),
        action=clean(action),
        resource=resource,
        outcome=outcome,
        status=status,
        reason=clean(reason),
        request_id=clean(request_id),
        client=clean(client),
        details=clean(details),
    )
    if at is not None:
        entry.at = at
    return await store.append(
        conn, tenant, entry.fields(), lambda seq, prev: record_hash(tenant, seq, entry, prev)
    )


async def record_now(db: Database, tenant: str, **fields: Any) -> tuple[int, str]:
    """``record()`` in a transaction of its own."""
    async with db.tenant(tenant) as conn:
        return await record(conn, tenant, **fields)

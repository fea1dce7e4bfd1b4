"""Writing audit records: ``record()`` inside any tenant-bound transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from engram.audit.chain import Entry, record_hash
from engram.audit.subjects import pseudonymize
from engram.store import audit as store
from engram.store.db import Conn, Database

__all__ = ["record", "record_now"]

logger = logging.getLogger(__name__)


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
) -> tuple[int, str]:
    """Append one record to ``tenant``'s chain in the caller's transaction (bound to that
    tenant by ``Database.tenant``); it commits or rolls back with the caller's work.
    ``subjects`` are the (kind, id) users and sessions that ``resource`` names: each
    segment of the ``resource`` path equal to one of their ids is written as its pseudonym.
    Returns (seq, hash)."""
    if subjects:
        resource = await pseudonymize(conn, resource, subjects)
    entry = Entry(
        actor=actor,
        action=action,
        resource=resource,
        outcome=outcome,
        status=status,
        reason=reason,
        request_id=request_id,
        client=client,
        details=details,
    )
    return await store.append(
        conn, tenant, entry.fields(), lambda seq, prev: record_hash(tenant, seq, entry, prev)
    )


async def record_now(db: Database, tenant: str, **fields: Any) -> tuple[int, str]:
    """``record()`` in a transaction of its own."""
    async with db.tenant(tenant) as conn:
        return await record(conn, tenant, **fields)

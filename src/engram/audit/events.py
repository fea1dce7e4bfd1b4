"""A tenant's audit log, read for its auditors: the records, and the verdict on its chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engram.audit.checkpoints import CheckpointStore
from engram.audit.subjects import attach_subjects
from engram.audit.verify import Report, verify_tenant
from engram.store import audit as store
from engram.store.db import Database

__all__ = ["read_events", "verify_log"]


async def read_events(
    db: Database, tenant: str, *, since: datetime | None, limit: int, resolve: bool
) -> list[dict[str, Any]]:
    """The tenant's first `limit` records in chain order (from time `since`, if given),
    with `subjects` (pseudonyms mapped to user/session ids) when `resolve`."""
    out: list[dict[str, Any]] = []
    async with db.tenant(tenant) as conn:
        async for row in store.iterate(conn, tenant, since=since, batch=min(limit, 2000)):
            out.append(row)
            if len(out) >= limit:
                break
        if resolve:
            await attach_subjects(conn, out)
    return out


async def verify_log(
    db: Database,
    tenant: str,
    checkpoints: CheckpointStore | None = None,
    public_key: Ed25519PublicKey | None = None,
) -> Report:
    """The verdict on the tenant's chain (see `verify_tenant`), in a transaction bound to it."""
    async with db.tenant(tenant) as conn:
        return await verify_tenant(conn, tenant, checkpoints, public_key)

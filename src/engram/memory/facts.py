"""Facts of the knowledge graph, one at a time: read (revealed for the caller) and delete."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from engram.crypto import reveal
from engram.crypto.protect import Protector
from engram.store import facts
from engram.store.db import Database

__all__ = ["delete_fact", "get_fact"]


async def get_fact(
    db: Database, protector: Protector, tenant: str, fact_uuid: uuidlib.UUID, *, plaintext: bool
) -> dict[str, Any]:
    """One fact (404 for an unknown one), revealed as the caller may read it."""
    async with db.tenant(tenant) as conn:
        row = await facts.get(conn, fact_uuid)
    await reveal.facts(protector, tenant, [row], plaintext)
    return row


async def delete_fact(db: Database, tenant: str, fact_uuid: uuidlib.UUID) -> None:
    """Delete one fact (404 for an unknown one)."""
    async with db.tenant(tenant) as conn:
        await facts.delete(conn, fact_uuid)

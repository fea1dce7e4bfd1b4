"""A user's temporal knowledge graph, read: as of a time, one entity, provenance (all
revealed as the caller may read them)."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engram.crypto import reveal
from engram.crypto.protect import Protector
from engram.store import entities, episodes, facts, users
from engram.store.db import Database

__all__ = ["EntityFacts", "UserGraph", "entity_facts", "fact_provenance", "user_graph"]

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserGraph:
    """The facts of a user's graph that held at a time as recorded at another, the
    entities they link, and the user's episodes."""

    facts: list[Row]
    entities: list[Row]
    episodes: list[Row]


@dataclass(frozen=True, slots=True)
class EntityFacts:
    """One entity and its facts."""

    entity: Row
    facts: list[Row]


async def user_graph(
    db: Database, protector: Protector, tenant: str, user_id: str, *, valid: datetime,
    known: datetime, limit: int, plaintext: bool,
) -> UserGraph:  # fmt: skip
    """The user's graph (404 for an unknown user): at most `limit` facts valid at `valid`
    as known at `known`, their entities, and at most `limit` episodes."""
    async with db.tenant(tenant) as conn:
        await users.get(conn, user_id)
        rows = await facts.as_of(conn, user_id, valid, known, limit)
        ids = list({r["source_uuid"] for r in rows} | {r["target_uuid"] for r in rows})
        nodes = await entities.many(conn, ids)
        eps = await episodes.of_user(conn, user_id, limit)
    await reveal.facts(protector, tenant, rows, plaintext)
    await reveal.entities(protector, tenant, nodes, plaintext)
    return UserGraph(facts=rows, entities=nodes, episodes=eps)


async def entity_facts(
    db: Database, protector: Protector, tenant: str, user_id: str, entity_uuid: uuidlib.UUID,
    *, include_invalid: bool, plaintext: bool,
) -> EntityFacts:  # fmt: skip
    """One entity of the user (404 for an unknown one) with its facts (only the current
    ones unless `include_invalid`)."""
    async with db.tenant(tenant) as conn:
        node = await entities.get(conn, user_id, entity_uuid)
        rows = await facts.of_entity(conn, entity_uuid, include_invalid)
    await reveal.facts(protector, tenant, rows, plaintext)
    await reveal.entities(protector, tenant, [node], plaintext)
    return EntityFacts(entity=node, facts=rows)


async def fact_provenance(
    db: Database, protector: Protector, tenant: str, fact_uuid: uuidlib.UUID, *, plaintext: bool
) -> list[Row]:
    """The messages a fact was extracted from."""
    async with db.tenant(tenant) as conn:
        rows = await facts.provenance(conn, fact_uuid)
    await reveal.messages(protector, tenant, rows, plaintext)
    return rows

"""A user's temporal knowledge graph: as of a time, one entity, fact search, provenance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from engram.api.body import JsonRoute
from engram.api.deps import Db, Embed, Protect, ReadProtected, RuntimeDep, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.v1.models import EntityWithFacts, FactEpisodes, FactSearchResults, UserGraph
from engram.api.validation import IsoDateTime, Number, search_bounds, whole
from engram.api.zep.schemas import message_json
from engram.errors import ValidationError
from engram.memory import graph
from engram.memory.search import search
from engram.search import HybridQuery, Scope

__all__ = ["router"]

router = APIRouter(tags=["graph"], default_response_class=FastJSON, route_class=JsonRoute)


def _fact(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "uuid": row["uuid"],
        "fact": row["fact"],
        "relation": row["relation"],
        "source": {"uuid": row["source_uuid"], "name": row.get("source_name")},
        "target": {"uuid": row["target_uuid"], "name": row.get("target_name")},
        "valid_at": row["valid_at"],
        "invalid_at": row["invalid_at"],
        "created_at": row["created_at"],
        "expired_at": row["expired_at"],
        "rating": row["rating"],
        "episodes": row["episodes"],
    }
    if "score" in row:
        out["score"] = row["score"]
    return out


def _aware(value: datetime | None, name: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        raise ValidationError(
            f"{name} has no time zone", field=name, hint="send ISO 8601 with Z or an offset"
        )
    return value


@router.get("/users/{user_id}/graph", responses=returns(UserGraph))
async def user_graph(
    user_id: str,
    db: Db,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    as_of: Annotated[IsoDateTime | None, Query(description="what held at this time")] = None,
    known_at: Annotated[IsoDateTime | None, Query(description="as recorded at this time")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Any:
    """Entities, facts and episodes of a user's graph, bi-temporally."""
    valid, known = _aware(as_of, "as_of"), _aware(known_at, "known_at")
    found = await graph.user_graph(
        db, protector, tenant, user_id, valid=valid, known=known, limit=limit,
        plaintext=plaintext,
    )  # fmt: skip
    return {
        "user_id": user_id,
        "as_of": valid,
        "known_at": known,
        "entities": found.entities,
        "facts": [_fact(r) for r in found.facts],
        "episodes": found.episodes,
    }


@router.get("/users/{user_id}/entities/{entity_uuid}", responses=returns(EntityWithFacts))
async def entity(
    user_id: str,
    entity_uuid: UUID,
    db: Db,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    include_invalid: bool = False,
) -> Any:
    """One entity with its facts (only current ones unless include_invalid)."""
    found = await graph.entity_facts(
        db, protector, tenant, user_id, entity_uuid, include_invalid=include_invalid,
        plaintext=plaintext,
    )  # fmt: skip
    return {**found.entity, "facts": [_fact(r) for r in found.facts]}


class FactSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr = Field(min_length=1, max_length=8192)
    user_id: StrictStr
    limit: StrictInt = Field(default=10, ge=1)  # at most limits.max_search_results
    min_score: Number | None = Field(default=None, ge=-1, le=1)

    _whole = field_validator("limit", mode="before")(whole)


@router.post("/facts/search", responses=returns(FactSearchResults, errors=(404,)))
async def fact_search(
    body: FactSearch, db: Db, embed: Embed, runtime: RuntimeDep, tenant: Tenant,
    protector: Protect, plaintext: ReadProtected,
) -> Any:  # fmt: skip
    """Currently valid facts of a user closest in meaning to the text."""
    search_bounds(runtime.settings.limits, body.limit, body.text)
    hits = await search(
        db,
        embed,
        protector,
        tenant,
        HybridQuery(
            text=body.text,
            targets=("facts",),
            scope=Scope(user_ids=[body.user_id]),
            limit=body.limit,
            min_score=body.min_score,
            ef_search=runtime.settings.vector.hnsw_ef_search,
            ts_config=runtime.settings.text_search_config,
        ),
        user_ids=[body.user_id],
        plaintext=plaintext,
    )
    return {"results": [_fact({**h.item, "score": h.score}) for h in hits]}


@router.get("/facts/{fact_uuid}/episodes", responses=returns(FactEpisodes))
async def fact_episodes(
    fact_uuid: UUID, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    """The messages a fact was extracted from."""
    rows = await graph.fact_provenance(db, protector, tenant, fact_uuid, plaintext=plaintext)
    return {"messages": [{**message_json(r), "session_id": r["session_id"]} for r in rows]}

"""Native search with score parts, and a ready-to-prompt context block for a session."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from engram.api.body import JsonRoute
from engram.api.deps import Db, Embed, Protect, ReadProtected, RuntimeDep, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.v1.models import Context, SearchResults
from engram.api.validation import IsoDateTime, JsonObject, Number, json_within, search_bounds, whole
from engram.memory import estimate_tokens, messages
from engram.memory.search import search as search_memory
from engram.search import Hit, HybridQuery, Scope

__all__ = ["router"]

router = APIRouter(tags=["search"], default_response_class=FastJSON, route_class=JsonRoute)


class SearchBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # user_id and user_ids, both non-null, are refused (as _one_scope does).
        json_schema_extra={
            "not": {
                "required": ["user_id", "user_ids"],
                "properties": {"user_id": {"type": "string"}, "user_ids": {"type": "array"}},
            }
        },
    )

    text: StrictStr = Field(min_length=1, max_length=8192)
    targets: list[Literal["messages", "facts", "entities"]] = Field(
        default=["messages", "facts"], min_length=1
    )
    user_id: StrictStr | None = None
    user_ids: list[StrictStr] | None = None
    session_ids: list[StrictStr] | None = None
    # At most limits.max_search_results (100 by default).
    limit: StrictInt = Field(default=10, ge=1)
    min_score: Number | None = Field(default=None, ge=0, le=1)
    time_from: IsoDateTime | None = None
    time_to: IsoDateTime | None = None
    as_of: IsoDateTime | None = None
    metadata: JsonObject | None = None
    roles: list[StrictStr] | None = None
    mmr_lambda: Number | None = Field(default=None, ge=0, le=1)
    recency_half_life_days: Number | None = Field(default=None, gt=0)
    ef_search: StrictInt | None = Field(default=None, ge=1, le=1000)

    _whole = field_validator("limit", "ef_search", mode="before")(whole)

    @model_validator(mode="after")
    def _one_scope(self) -> SearchBody:
        if self.user_id is not None and self.user_ids is not None:
            raise ValueError("give user_id or user_ids, not both")
        for name in ("time_from", "time_to", "as_of"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} needs a time zone (e.g. Z)")
        return self


def hit_json(hit: Hit) -> dict[str, Any]:
    """A result with its kind, fused score and the score of each signal that found it."""
    return {
        "kind": hit.kind,
        "score": round(hit.score, 6),
        "score_parts": hit.parts,
        "ranks": hit.ranks,
        hit.kind: hit.item,
    }


@router.post("/search", responses=returns(SearchResults, errors=(404,)))
async def search(
    body: SearchBody, db: Db, embed: Embed, runtime: RuntimeDep, tenant: Tenant,
    protector: Protect, plaintext: ReadProtected,
) -> Any:  # fmt: skip
    """Hybrid search over messages, facts and entities, with why each result ranked."""
    json_within(runtime.settings.limits.max_metadata_bytes, {"metadata": body.metadata})
    search_bounds(runtime.settings.limits, body.limit, body.text)
    user_ids = body.user_ids or ([body.user_id] if body.user_id else None)
    scope = Scope(
        user_ids=user_ids,
        session_ids=body.session_ids,
        time_from=body.time_from,
        time_to=body.time_to,
        as_of=body.as_of,
        metadata=body.metadata,
        roles=body.roles,
    )
    hits = await search_memory(
        db,
        embed,
        protector,
        tenant,
        HybridQuery(
            text=body.text,
            targets=tuple(dict.fromkeys(body.targets)),
            scope=scope,
            limit=body.limit,
            min_score=body.min_score,
            mmr_lambda=body.mmr_lambda,
            recency_half_life_days=body.recency_half_life_days,
            ef_search=body.ef_search or runtime.settings.vector.hnsw_ef_search,
            ts_config=runtime.settings.text_search_config,
        ),
        user_ids=user_ids,
        plaintext=plaintext,
    )
    return {"results": [hit_json(h) for h in hits]}


def _day(value: datetime | None) -> str:
    return value.date().isoformat() if value else "?"


@router.get("/sessions/{session_id}/context", responses=returns(Context, errors=(409,)))
async def context(
    session_id: str,
    db: Db,
    embed: Embed,
    runtime: RuntimeDep,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    max_tokens: Annotated[int, Query(ge=16, le=100_000)] = 1000,
    # In the URL: 2,000 characters stay within what the HTTP server reads (even at 12
    # bytes each, percent-encoded); longer texts go to POST /v1/search.
    query: Annotated[str | None, Query(max_length=2000)] = None,
    recent: Annotated[int, Query(ge=0, le=100, description="latest messages left out")] = 4,
) -> Any:
    """Facts (with validity dates) and earlier messages relevant to the session now,
    as a block of text that fits ``max_tokens``."""
    remembered = await messages.session_recall(
        db, embed, protector, tenant, runtime.settings, session_id, recent=recent, query=query,
        plaintext=plaintext,
    )  # fmt: skip
    skip = set(remembered.latest[-recent:]) if recent else set()
    facts_part: list[dict[str, Any]] = []
    msgs_part: list[dict[str, Any]] = []
    lines_f: list[str] = []
    lines_m: list[str] = []
    budget = max_tokens - estimate_tokens("FACTS:\nEARLIER MESSAGES:\n")
    for h in remembered.hits:
        if h.kind == "fact":
            f = h.item
            until = _day(f["invalid_at"]) if f["invalid_at"] else "present"
            line = f"- {f['fact']} (valid {_day(f['valid_at'])} to {until})"
        elif h.kind == "message" and h.item["uuid"] not in skip:
            m = h.item
            who = m["role"] or m["role_type"]
            line = f"- [{m['created_at']:%Y-%m-%d %H:%M}] {who}: {m['content']}"
        else:
            continue
        cost = estimate_tokens(line)
        if cost > budget:
            continue
        budget -= cost
        (lines_f if h.kind == "fact" else lines_m).append(line)
        (facts_part if h.kind == "fact" else msgs_part).append(h.item)
    blocks = []
    if lines_f:
        blocks.append("FACTS:\n" + "\n".join(lines_f))
    if lines_m:
        blocks.append("EARLIER MESSAGES:\n" + "\n".join(lines_m))
    block = "\n\n".join(blocks)
    return {
        "context": block,
        "tokens": estimate_tokens(block) if block else 0,
        "facts": facts_part,
        "messages": msgs_part,
    }

"""Zep v2 sessions: add, get, update, list ordered, search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from engram.api.body import JsonRoute
from engram.api.deps import Db, Embed, Limits, Protect, ReadProtected, RuntimeDep, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.validation import json_within, search_bounds
from engram.api.zep.errors import zep_duplicate
from engram.api.zep.models import Session, SessionListResponse, SessionSearchResponse
from engram.api.zep.schemas import (
    MAX_PAGE,
    CreateSessionRequest,
    SearchRequest,
    UpdateSessionRequest,
    fact_json,
    message_json,
    session_json,
)
from engram.memory import sessions
from engram.memory.search import search as search_memory
from engram.search import HybridQuery, Scope

__all__ = ["router"]

router = APIRouter(tags=["sessions"], default_response_class=FastJSON, route_class=JsonRoute)


@router.post("/sessions", status_code=201, responses=returns(Session, 201, (404,)))
async def add_session(
    body: CreateSessionRequest, db: Db, tenant: Tenant, protector: Protect,
    plaintext: ReadProtected, limits: Limits,
) -> Any:  # fmt: skip
    json_within(
        limits.max_metadata_bytes,
        {"metadata": body.metadata, "fact_rating_instruction": body.fact_rating_instruction},
    )
    async with zep_duplicate():
        row = await sessions.add_session(
            db, protector, tenant, body.session_id, body.user_id, body.metadata,
            body.fact_rating_instruction, plaintext=plaintext,
        )  # fmt: skip
    return FastJSON(session_json(row), status_code=201)


@router.get("/sessions-ordered", responses=returns(SessionListResponse))
async def list_sessions(
    db: Db,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    page_number: Annotated[int, Query(ge=0, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 10,
    order_by: sessions.OrderBy = "created_at",
    asc: bool = False,
) -> Any:
    offset = (max(page_number, 1) - 1) * page_size
    page = await sessions.list_sessions(
        db, protector, tenant, offset=offset, limit=page_size, order_by=order_by,
        ascending=asc, plaintext=plaintext,
    )  # fmt: skip
    return {
        "sessions": [session_json(r) for r in page.rows],
        "response_count": len(page.rows),
        "total_count": page.total,
    }


@router.post("/sessions/search", responses=returns(SessionSearchResponse, errors=(404,)))
async def search(
    body: SearchRequest,
    db: Db,
    embed: Embed,
    runtime: RuntimeDep,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    limit: Annotated[int, Query(ge=1)] = 10,
) -> Any:
    """Zep's search, served by the hybrid engine (fused score in 0..1). ``limit`` is at
    most the server's limits.max_search_results (100 by default)."""
    search_bounds(runtime.settings.limits, limit, body.text)
    json_within(runtime.settings.limits.max_metadata_bytes, {"record_filter": body.record_filter})
    if body.search_scope == "summary":
        return {"results": []}  # Engram does not write summaries
    facts = body.search_scope == "facts"
    hits = await search_memory(
        db,
        embed,
        protector,
        tenant,
        HybridQuery(
            text=body.text,
            targets=("facts",) if facts else ("messages",),
            scope=Scope(
                user_ids=[body.user_id] if body.user_id else None,
                session_ids=body.session_ids,
                metadata=None if facts else body.record_filter,
            ),
            limit=limit,
            min_score=body.min_score,
            mmr_lambda=(body.mmr_lambda if body.mmr_lambda is not None else 0.5)
            if body.search_type == "mmr"
            else None,
            ef_search=runtime.settings.vector.hnsw_ef_search,
            ts_config=runtime.settings.text_search_config,
        ),
        user_ids=None if body.user_id is None else [body.user_id],
        plaintext=plaintext,
    )
    if facts:
        rated = [
            h for h in hits
            if body.min_fact_rating is None or (h.item.get("rating") or 1) >= body.min_fact_rating
        ]  # fmt: skip
        return {
            "results": [
                {"fact": fact_json(h.item), "score": h.score, "message": None,
                 "session_id": None, "summary": None}
                for h in rated
            ]
        }  # fmt: skip
    return {
        "results": [
            {
                "message": message_json(h.item),
                "score": h.score,
                "session_id": h.item["session_id"],
                "fact": None,
                "summary": None,
            }
            for h in hits
        ]
    }


@router.get("/sessions/{session_id}", responses=returns(Session))
async def get_session(
    session_id: str, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    return session_json(
        await sessions.get_session(db, protector, tenant, session_id, plaintext=plaintext)
    )


@router.patch("/sessions/{session_id}", responses=returns(Session))
async def update_session(
    session_id: str, body: UpdateSessionRequest, db: Db, tenant: Tenant, protector: Protect,
    plaintext: ReadProtected, limits: Limits,
) -> Any:  # fmt: skip
    json_within(
        limits.max_metadata_bytes,
        {"metadata": body.metadata, "fact_rating_instruction": body.fact_rating_instruction},
    )
    row = await sessions.update_session(
        db, protector, tenant, session_id, body.metadata, body.fact_rating_instruction,
        plaintext=plaintext,
    )  # fmt: skip
    return session_json(row)

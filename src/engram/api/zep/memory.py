"""Zep v2 memory and messages of a session."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from engram.api.body import JsonRoute
from engram.api.deps import Db, Embed, Limits, Protect, ReadProtected, RuntimeDep, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.validation import json_within
from engram.api.zep.errors import zep_duplicate
from engram.api.zep.models import Memory, Message, MessageListResponse, SuccessResponse
from engram.api.zep.schemas import (
    MAX_PAGE,
    NOT_BLANK,
    MemoryAddRequest,
    UpdateMessageRequest,
    fact_json,
    message_json,
)
from engram.errors import ValidationError
from engram.memory import MessageIn, add_messages, messages

__all__ = ["router"]

router = APIRouter(tags=["memory"], default_response_class=FastJSON, route_class=JsonRoute)


@router.post("/sessions/{session_id}/memory", responses=returns(SuccessResponse))
async def add_memory(
    session_id: str, body: MemoryAddRequest, db: Db, embed: Embed, runtime: RuntimeDep,
    tenant: Tenant,
) -> Any:  # fmt: skip
    limits = runtime.settings.limits
    if len(body.messages) > limits.max_messages_per_request:
        raise ValidationError(
            f"{len(body.messages)} messages in one request; the limit is "
            f"{limits.max_messages_per_request}",
            field="messages",
            hint="split the messages over several requests",
        )
    episode = []
    for i, m in enumerate(body.messages):
        if len(m.content) > limits.max_content_chars:
            raise ValidationError(
                f"messages[{i}].content has {len(m.content)} characters; the limit is "
                f"{limits.max_content_chars}",
                field=f"messages[{i}].content",
                hint="shorten the message or raise limits.max_content_chars",
            )
        if not NOT_BLANK.search(m.content):
            raise ValidationError(f"messages[{i}].content is blank", field=f"messages[{i}].content")
        json_within(limits.max_metadata_bytes, {f"messages[{i}].metadata": m.metadata})
        episode.append(
            MessageIn(
                content=m.content,
                role_type=m.role_type,
                role=m.role or "",
                metadata=m.metadata or {},
                created_at=m.created_at,
                uuid=m.uuid,
            )
        )
    total = sum(len(m.content) for m in body.messages)
    if total > limits.max_request_chars:
        raise ValidationError(
            f"the messages hold {total} characters of content in all; the limit for one "
            f"request is {limits.max_request_chars}",
            field="messages",
            hint="split the messages over several requests",
        )
    async with zep_duplicate():
        await add_messages(
            db, embed, runtime.protector, tenant, session_id, episode,
            runtime.settings.text_search_config,
        )  # fmt: skip
    return {"message": "OK"}


@router.get("/sessions/{session_id}/memory", responses=returns(Memory))
async def get_memory(
    session_id: str,
    db: Db,
    embed: Embed,
    runtime: RuntimeDep,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    lastn: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    min_rating: Annotated[float | None, Query(alias="minRating")] = None,
) -> Any:
    memory = await messages.session_memory(
        db, embed, protector, tenant, runtime.settings, session_id,
        last=lastn or runtime.settings.memory_window, min_rating=min_rating, plaintext=plaintext,
    )  # fmt: skip
    return {
        "messages": [message_json(r) for r in memory.messages],
        "relevant_facts": [fact_json(f) for f in memory.relevant_facts],
        "facts": [],
        "metadata": memory.session["metadata"],
        "summary": None,
    }


@router.delete("/sessions/{session_id}/memory", responses=returns(SuccessResponse))
async def delete_memory(session_id: str, db: Db, tenant: Tenant) -> Any:
    await messages.delete_messages(db, tenant, session_id)
    return {"message": "OK"}


@router.get("/sessions/{session_id}/messages", responses=returns(MessageListResponse))
async def list_messages(
    session_id: str,
    db: Db,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int, Query(ge=0, le=MAX_PAGE, description="1-based page number")] = 1,
) -> Any:
    offset = (max(cursor, 1) - 1) * limit
    page = await messages.list_messages(
        db, protector, tenant, session_id, offset=offset, limit=limit, plaintext=plaintext
    )
    return {
        "messages": [message_json(r) for r in page.rows],
        "row_count": len(page.rows),
        "total_count": page.total,
    }


@router.get("/sessions/{session_id}/messages/{message_uuid}", responses=returns(Message))
async def get_message(
    session_id: str, message_uuid: UUID, db: Db, tenant: Tenant, protector: Protect,
    plaintext: ReadProtected,
) -> Any:  # fmt: skip
    row = await messages.get_message(
        db, protector, tenant, session_id, message_uuid, plaintext=plaintext
    )
    return message_json(row)


@router.patch("/sessions/{session_id}/messages/{message_uuid}", responses=returns(Message))
async def update_message(
    session_id: str, message_uuid: UUID, body: UpdateMessageRequest, db: Db, tenant: Tenant,
    protector: Protect, plaintext: ReadProtected, limits: Limits,
) -> Any:  # fmt: skip
    json_within(limits.max_metadata_bytes, {"metadata": body.metadata})
    row = await messages.update_message(
        db, protector, tenant, session_id, message_uuid, body.metadata, plaintext=plaintext
    )
    return message_json(row)

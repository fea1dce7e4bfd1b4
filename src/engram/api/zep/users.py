"""Zep v2 users: add, get, update, delete, list ordered, list a user's sessions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from engram.api.body import JsonRoute
from engram.api.deps import Db, Limits, Protect, ReadProtected, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.validation import json_within
from engram.api.zep.errors import zep_duplicate
from engram.api.zep.models import Session, SuccessResponse, User, UserListResponse
from engram.api.zep.schemas import (
    MAX_PAGE,
    CreateUserRequest,
    UpdateUserRequest,
    session_json,
    user_json,
)
from engram.memory import users

__all__ = ["router"]

router = APIRouter(tags=["users"], default_response_class=FastJSON, route_class=JsonRoute)


@router.post("/users", status_code=201, responses=returns(User, 201))
async def add_user(
    body: CreateUserRequest, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected,
    limits: Limits,
) -> Any:  # fmt: skip
    json_within(limits.max_metadata_bytes, {"metadata": body.metadata})
    async with zep_duplicate():
        row = await users.add_user(
            db, protector, tenant, body.user_id, body.model_dump(), plaintext=plaintext
        )
    return FastJSON(user_json(row), status_code=201)


@router.get("/users-ordered", responses=returns(UserListResponse))
async def list_users(
    db: Db,
    tenant: Tenant,
    protector: Protect,
    plaintext: ReadProtected,
    page_number: Annotated[int, Query(alias="pageNumber", ge=0, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 10,
) -> Any:
    offset = (max(page_number, 1) - 1) * page_size
    page = await users.list_users(
        db, protector, tenant, offset=offset, limit=page_size, plaintext=plaintext
    )
    return {
        "users": [user_json(r) for r in page.rows],
        "row_count": len(page.rows),
        "total_count": page.total,
    }


@router.get("/users/{user_id}", responses=returns(User))
async def get_user(
    user_id: str, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    return user_json(await users.get_user(db, protector, tenant, user_id, plaintext=plaintext))


@router.patch("/users/{user_id}", responses=returns(User))
async def update_user(
    user_id: str, body: UpdateUserRequest, db: Db, tenant: Tenant, protector: Protect,
    plaintext: ReadProtected, limits: Limits,
) -> Any:  # fmt: skip
    json_within(limits.max_metadata_bytes, {"metadata": body.metadata})
    row = await users.update_user(
        db, protector, tenant, user_id, body.model_dump(), plaintext=plaintext
    )
    return user_json(row)


@router.delete("/users/{user_id}", responses=returns(SuccessResponse))
async def delete_user(user_id: str, db: Db, tenant: Tenant) -> Any:
    await users.delete_user(db, tenant, user_id)
    return {"message": "OK"}


@router.get("/users/{user_id}/sessions", responses=returns(list[list[Session]]))
async def user_sessions(
    user_id: str, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    rows = await users.user_sessions(db, protector, tenant, user_id, plaintext=plaintext)
    # A list wrapping one list: the shape zep-python 2.x parses (List[List[Session]], as
    # Zep's published API definition declares it); a flat list breaks the SDK.
    return [[session_json(r) for r in rows]]

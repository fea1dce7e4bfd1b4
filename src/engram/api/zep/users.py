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
from engram.errors import NotFoundError
from engram.memory import reveal
from engram.memory.users import add_user as store_user
from engram.memory.users import update_user as change_user
from engram.store import sessions, users

__all__ = ["router"]

router = APIRouter(tags=["users"], default_response_class=FastJSON, route_class=JsonRoute)


@router.post("/users", status_code=201, responses=returns(User, 201))
async def add_user(
    body: CreateUserRequest, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected,
    limits: Limits,
) -> Any:  # fmt: skip
    json_within(limits.max_metadata_bytes, {"metadata": body.metadata})
    async with zep_duplicate():
        row = await store_user(db, protector, tenant, body.user_id, body.model_dump())
    await reveal.users(protector, tenant, [row], plaintext)
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
    async with db.tenant(tenant, pipeline=True) as conn:  # one round trip for both
        listed = await users.send_list_ordered(conn, offset=offset, limit=page_size)
        counted = await users.send_count(conn)
        rows, total = await listed.result(), await counted.result()
    await reveal.users(protector, tenant, rows, plaintext)
    return {"users": [user_json(r) for r in rows], "row_count": len(rows), "total_count": total}


@router.get("/users/{user_id}", responses=returns(User))
async def get_user(
    user_id: str, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    async with db.tenant(tenant) as conn:
        row = await users.get(conn, user_id)
    await reveal.users(protector, tenant, [row], plaintext)
    return user_json(row)


@router.patch("/users/{user_id}", responses=returns(User))
async def update_user(
    user_id: str, body: UpdateUserRequest, db: Db, tenant: Tenant, protector: Protect,
    plaintext: ReadProtected, limits: Limits,
) -> Any:  # fmt: skip
    json_within(limits.max_metadata_bytes, {"metadata": body.metadata})
    row = await change_user(db, protector, tenant, user_id, body.model_dump())
    await reveal.users(protector, tenant, [row], plaintext)
    return user_json(row)


@router.delete("/users/{user_id}", responses=returns(SuccessResponse))
async def delete_user(user_id: str, db: Db, tenant: Tenant) -> Any:
    async with db.tenant(tenant) as conn:
        await users.delete(conn, user_id)
    return {"message": "OK"}


@router.get("/users/{user_id}/sessions", responses=returns(list[list[Session]]))
async def user_sessions(
    user_id: str, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    async with db.tenant(tenant) as conn:
        if not await users.exists(conn, user_id):
            raise NotFoundError("user", user_id)
        rows = await sessions.list_for_user(conn, user_id)
    await reveal.sessions(protector, tenant, rows, plaintext)
    # A list wrapping one list: the shape zep-python 2.x parses (List[List[Session]], as
    # Zep's published API definition declares it); a flat list breaks the SDK.
    return [[session_json(r) for r in rows]]

"""Zep v2 facts: one fact by uuid, and deleting it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from engram.api.body import JsonRoute
from engram.api.deps import Db, Protect, ReadProtected, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.zep.models import FactResponse
from engram.api.zep.schemas import fact_json
from engram.memory import reveal
from engram.store import facts

__all__ = ["router"]

router = APIRouter(tags=["facts"], default_response_class=FastJSON, route_class=JsonRoute)


@router.get("/facts/{fact_uuid}", responses=returns(FactResponse))
async def get_fact(
    fact_uuid: UUID, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    async with db.tenant(tenant) as conn:
        row = await facts.get(conn, fact_uuid)
    await reveal.facts(protector, tenant, [row], plaintext)
    return {"fact": fact_json(row)}


@router.delete("/facts/{fact_uuid}", responses=returns(str))
async def delete_fact(fact_uuid: UUID, db: Db, tenant: Tenant) -> Any:
    async with db.tenant(tenant) as conn:
        await facts.delete(conn, fact_uuid)
    return "Deleted"

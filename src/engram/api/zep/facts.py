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
from engram.memory import facts

__all__ = ["router"]

router = APIRouter(tags=["facts"], default_response_class=FastJSON, route_class=JsonRoute)


@router.get("/facts/{fact_uuid}", responses=returns(FactResponse))
async def get_fact(
    fact_uuid: UUID, db: Db, tenant: Tenant, protector: Protect, plaintext: ReadProtected
) -> Any:
    row = await facts.get_fact(db, protector, tenant, fact_uuid, plaintext=plaintext)
    return {"fact": fact_json(row)}


@router.delete("/facts/{fact_uuid}", responses=returns(str))
async def delete_fact(fact_uuid: UUID, db: Db, tenant: Tenant) -> Any:
    await facts.delete_fact(db, tenant, fact_uuid)
    return "Deleted"

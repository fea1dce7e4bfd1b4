"""Zep v2 facts. The knowledge graph that produces facts is issue 3; until then no fact
exists, so every id is answered with Zep's 404."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from engram.api.deps import Tenant
from engram.api.responses import FastJSON
from engram.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(tags=["facts"], default_response_class=FastJSON)


@router.get("/facts/{fact_uuid}")
async def get_fact(fact_uuid: UUID, tenant: Tenant) -> Any:
    raise NotFoundError("fact", str(fact_uuid))


@router.delete("/facts/{fact_uuid}")
async def delete_fact(fact_uuid: UUID, tenant: Tenant) -> Any:
    raise NotFoundError("fact", str(fact_uuid))

"""The caller's own tenant's audit log: read it and verify its chain (auditors)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from engram.api.body import JsonRoute
from engram.api.deps import Db, RuntimeDep, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.v1.models import AuditEvents, AuditVerdict
from engram.api.validation import IsoDateTime
from engram.audit.checkpoints import from_settings
from engram.audit.events import read_events, verify_log

__all__ = ["router"]

router = APIRouter(tags=["audit"], default_response_class=FastJSON, route_class=JsonRoute)


@router.get("/audit/events", responses=returns(AuditEvents))
async def events(
    db: Db,
    tenant: Tenant,
    since: IsoDateTime | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
    resolve: bool = Query(
        default=False, description="add 'subjects': pseudonyms mapped to user/session ids"
    ),
) -> Any:
    return {"events": await read_events(db, tenant, since=since, limit=limit, resolve=resolve)}


@router.get("/audit/verify", responses=returns(AuditVerdict))
async def verify(db: Db, tenant: Tenant, runtime: RuntimeDep) -> Any:
    checkpoints, signer = from_settings(runtime.settings)
    report = await verify_log(db, tenant, checkpoints, signer.public_key)
    return {
        "tenant": tenant,
        "ok": report.ok,
        "length": report.length,
        "head": report.head,
        "checkpoint": None if report.checkpoint is None else report.checkpoint.length,
        "problems": [p.__dict__ for p in report.problems],
    }

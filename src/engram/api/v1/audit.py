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
from engram.audit.subjects import attach_subjects
from engram.audit.verify import verify_tenant
from engram.store import audit as store

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
    out: list[dict[str, Any]] = []
    async with db.tenant(tenant) as conn:
        async for row in store.iterate(conn, tenant, since=since, batch=min(limit, 2000)):
            out.append(row)
            if len(out) >= limit:
                break
        if resolve:
            await attach_subjects(conn, out)
    return {"events": out}


@router.get("/audit/verify", responses=returns(AuditVerdict))
async def verify(db: Db, tenant: Tenant, runtime: RuntimeDep) -> Any:
    checkpoints, signer = from_settings(runtime.settings)
    async with db.tenant(tenant) as conn:
        report = await verify_tenant(conn, tenant, checkpoints, signer.public_key)
    return {
        "tenant": tenant,
        "ok": report.ok,
        "length": report.length,
        "head": report.head,
        "checkpoint": None if report.checkpoint is None else report.checkpoint.length,
        "problems": [p.__dict__ for p in report.problems],
    }

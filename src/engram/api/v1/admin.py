"""Administration: tenants (platform admin), API keys (tenant admin), whoami."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictBool, StrictStr

from engram.api.body import JsonRoute
from engram.api.deps import AuthenticatorDep, CurrentPrincipal, Db
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.v1.models import ApiKey, ApiKeyCreated, ApiKeyList, Tenant, TenantList, WhoAmI
from engram.api.validation import Number
from engram.audit.log import record
from engram.auth.apikeys import new_key
from engram.auth.principal import Permission, Role
from engram.errors import ConflictError, ForbiddenError, NotFoundError
from engram.store import apikeys, tenants

__all__ = ["router"]

router = APIRouter(tags=["admin"], default_response_class=FastJSON, route_class=JsonRoute)


class TenantBody(BaseModel):
    id: StrictStr = Field(min_length=1, max_length=63, pattern=tenants.ID_PATTERN.pattern)
    name: StrictStr | None = Field(default=None, max_length=200)


class ApiKeyBody(BaseModel):
    name: StrictStr = Field(min_length=1, max_length=200)
    role: Role
    read_protected: StrictBool = False
    expires_in_days: Number | None = Field(default=None, gt=0, le=3650)
    # Another tenant's key: only for a platform admin (tenants:manage).
    tenant: StrictStr | None = None


def _key_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "secret_sha256"}


@router.get("/whoami", responses=returns(WhoAmI))
async def whoami(principal: CurrentPrincipal) -> Any:
    return {
        "tenant": principal.tenant,
        "actor": principal.actor,
        "role": principal.role.value,
        "method": principal.method,
        "permissions": sorted(p.value for p in principal.permissions),
        "can_read_protected": principal.can_read_protected,
    }


@router.post("/admin/tenants", status_code=201, responses=returns(Tenant, 201, (409,)))
async def create_tenant(body: TenantBody, db: Db, principal: CurrentPrincipal) -> Any:
    async with db.tenant(body.id) as conn:
        row = await tenants.create(conn, body.id, body.name)
        await record(conn, body.id, actor=principal.actor, action="tenant.create", resource=body.id)
    return row


@router.get("/admin/tenants", responses=returns(TenantList))
async def list_tenants(db: Db) -> Any:
    async with db.tenant("") as conn:
        return {"tenants": await tenants.list_all(conn)}


async def _set_status(
    tenant_id: str, status: str, db: Any, principal: Any, auth: Any
) -> dict[str, Any]:
    if tenant_id == principal.tenant and status == "disabled":
        raise ConflictError(
            "a tenant cannot disable itself (its admin would be locked out)",
            field="tenant_id",
            hint="disable it with the credentials of the platform (default) tenant",
        )
    async with db.tenant(tenant_id) as conn:
        row = await tenants.set_status(conn, tenant_id, status)
        await record(
            conn, tenant_id, actor=principal.actor, action=f"tenant.{status}", resource=tenant_id
        )
    auth.forget(tenant=tenant_id)
    return dict(row)


@router.post("/admin/tenants/{tenant_id}/disable", responses=returns(Tenant, errors=(409,)))
async def disable_tenant(
    tenant_id: str, db: Db, principal: CurrentPrincipal, auth: AuthenticatorDep
) -> Any:
    return await _set_status(tenant_id, "disabled", db, principal, auth)


@router.post("/admin/tenants/{tenant_id}/enable", responses=returns(Tenant))
async def enable_tenant(
    tenant_id: str, db: Db, principal: CurrentPrincipal, auth: AuthenticatorDep
) -> Any:
    return await _set_status(tenant_id, "active", db, principal, auth)


@router.post("/admin/apikeys", status_code=201, responses=returns(ApiKeyCreated, 201, (404,)))
async def create_apikey(body: ApiKeyBody, db: Db, principal: CurrentPrincipal) -> Any:
    tenant = body.tenant or principal.tenant
    if tenant != principal.tenant and not principal.can(Permission.TENANTS_MANAGE):
        raise ForbiddenError(
            "only a platform admin may create keys for another tenant",
            reason="permission",
            hint="leave out 'tenant', or ask the platform admin",
        )
    if body.read_protected and not principal.can_read_protected:
        raise ForbiddenError(
            "you cannot grant read_protected without holding it",
            reason="permission",
            hint="ask someone who holds read_protected",
        )
    key = new_key()
    expires = (
        datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    )
    async with db.tenant(tenant) as conn:
        if await tenants.status(conn, tenant) is None:
            raise NotFoundError("tenant", tenant)
        row = await apikeys.create(
            conn,
            tenant,
            key_id=key.key_id,
            digest=key.digest,
            name=body.name,
            role=body.role.value,
            read_protected=body.read_protected,
            created_by=principal.actor,
            expires_at=expires,
        )
        await record(
            conn,
            tenant,
            actor=principal.actor,
            action="apikey.create",
            resource=key.key_id,
            details={"role": body.role.value, "read_protected": body.read_protected},
        )
    return {**_key_view(row), "key": key.token}


@router.get("/admin/apikeys", responses=returns(ApiKeyList))
async def list_apikeys(db: Db, principal: CurrentPrincipal) -> Any:
    async with db.tenant(principal.tenant) as conn:
        return {"keys": await apikeys.list_for_tenant(conn)}


@router.delete("/admin/apikeys/{key_id}", responses=returns(ApiKey))
async def revoke_apikey(
    key_id: str, db: Db, principal: CurrentPrincipal, auth: AuthenticatorDep
) -> Any:
    async with db.tenant(principal.tenant) as conn:
        row = await apikeys.revoke(conn, key_id)
        await record(
            conn, principal.tenant, actor=principal.actor, action="apikey.revoke", resource=key_id
        )
    auth.forget(key_id=key_id)
    return row

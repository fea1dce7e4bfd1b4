"""Retention policy, archives and erasure: `/v1/admin/retention`, `/v1/archives`,
`DELETE /v1/users/{id}?erase=true`."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from engram.api.body import JsonRoute
from engram.api.deps import CurrentPrincipal, Db, RuntimeDep, Tenant
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.api.v1.models import (
    ArchiveList,
    Deleted,
    ErasureReceipt,
    RestoredArchive,
    RetentionPolicy,
)
from engram.api.validation import whole
from engram.lifecycle import archive
from engram.lifecycle.archive import restore_session
from engram.lifecycle.blobs import BlobStore, build_blob_store
from engram.lifecycle.erasure import erase_user
from engram.lifecycle.policy import change_policy, tenant_policy
from engram.memory.users import delete_user as delete_rows
from engram.runtime import Runtime

__all__ = ["router"]

router = APIRouter(tags=["lifecycle"], default_response_class=FastJSON, route_class=JsonRoute)


def _store(runtime: Runtime) -> BlobStore:
    return build_blob_store(runtime.settings.lifecycle.blob, runtime.settings.data_dir)


@router.get("/admin/retention", responses=returns(RetentionPolicy))
async def get_retention(db: Db, tenant: Tenant, runtime: RuntimeDep) -> Any:
    return (await tenant_policy(db, tenant, runtime.settings.lifecycle)).to_json()


class RetentionChange(BaseModel):
    """The fields to change; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid")
    retention_days: StrictInt | None = Field(
        default=None, ge=1, le=36_500, description="null: keep sessions forever"
    )
    # Not nullable: left out means unchanged (the default is never used, so not shown).
    action: Literal["archive", "delete"] = Field(
        default=None,  # type: ignore[arg-type]
        json_schema_extra=lambda s: s.pop("default", None),  # type: ignore[arg-type]
    )
    fact_cleanup_days: StrictInt | None = Field(
        default=None, ge=1, le=36_500, description="null: keep invalidated facts"
    )

    _whole = field_validator("retention_days", "fact_cleanup_days", mode="before")(whole)


@router.put("/admin/retention", responses=returns(RetentionPolicy))
async def put_retention(
    body: RetentionChange,
    db: Db,
    tenant: Tenant,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
) -> Any:
    """Change the given fields: retention_days, action, fact_cleanup_days (null = keep)."""
    policy = await change_policy(
        db, tenant, runtime.settings.lifecycle, body.model_dump(exclude_unset=True), principal.actor
    )
    return policy.to_json()


def _archive_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        k: r[k]
        for k in (
            "archive_id",
            "session_id",
            "user_id",
            "state",
            "store",
            "counts",
            "bytes",
            "started_at",
            "archived_at",
            "restored_at",
        )
    }


@router.get("/archives", responses=returns(ArchiveList))
async def list_archives(
    db: Db,
    tenant: Tenant,
    session_id: str | None = None,
    user_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> Any:
    rows = await archive.list_archives(
        db, tenant, session_id=session_id, user_id=user_id, limit=limit
    )
    return {"archives": [_archive_json(r) for r in rows]}


@router.post("/archives/{session_id}/restore", responses=returns(RestoredArchive, errors=(409,)))
async def restore_archive(
    session_id: str, db: Db, tenant: Tenant, runtime: RuntimeDep, archive_id: UUID | None = None
) -> Any:
    return await restore_session(db, _store(runtime), tenant, session_id, archive_id)


@router.delete("/users/{user_id}", responses=returns(Deleted | ErasureReceipt))
async def delete_user(
    user_id: str,
    db: Db,
    tenant: Tenant,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    erase: bool = False,
) -> Any:
    """Without erase: delete the user's rows (archives stay). With erase=true: GDPR
    erasure of everything, archives and data keys included; answers the receipt."""
    if not erase:
        await delete_rows(db, tenant, user_id)
        return {"message": "OK"}
    return await erase_user(
        db, lambda: _store(runtime), tenant, user_id, principal.actor, keyrings=runtime.keyrings
    )

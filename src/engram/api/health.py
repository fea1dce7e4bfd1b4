"""Kubernetes probes: /healthz (the process answers) and /readyz (it can serve)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from engram.api.deps import RuntimeDep
from engram.api.openapi import returns
from engram.api.responses import FastJSON
from engram.errors import EngramError
from engram.store import migrate

__all__ = ["router"]

router = APIRouter(tags=["health"], default_response_class=FastJSON)


class Health(BaseModel):
    status: str  # ok | unhealthy
    detail: str | None = None


class Readiness(BaseModel):
    status: str  # ready | starting | unavailable
    checks: dict[str, str]


@router.get("/healthz", responses={**returns(Health), 503: {"model": Health}})
async def healthz(runtime: RuntimeDep) -> Any:
    watchdog = runtime.watchdog
    if watchdog is not None and not watchdog.healthy:
        # The embedded PostgreSQL died and could not be started again: a new pod may.
        # Public route: the reason goes to the server log only.
        detail = f"embedded PostgreSQL restart failed {watchdog.failures} times; see the log"
        return FastJSON({"status": "unhealthy", "detail": detail}, status_code=503)
    return {"status": "ok"}


@router.get("/readyz", responses={**returns(Readiness), 503: {"model": Readiness}})
async def readyz(runtime: RuntimeDep) -> Any:
    checks: dict[str, str] = {}
    db, embedder = runtime.db, runtime.embedder
    if db is None or embedder is None:
        return FastJSON({"status": "starting", "checks": checks}, status_code=503)
    try:
        async with db.pool.connection(timeout=2.0) as conn:
            version = await migrate.pgvector_version_async(conn)
            checks["database"] = "ok"
            checks["pgvector"] = version or "missing"
            meta = await migrate.read_meta_async(conn)
        if meta is None or meta.dimensions != embedder.dimensions:
            checks["dimensions"] = (
                f"database {meta.dimensions if meta else 'unset'} != embedder {embedder.dimensions}"
            )
        else:
            checks["dimensions"] = "ok"
    except EngramError as exc:
        checks["database"] = exc.message
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = (
        all(v == "ok" for k, v in checks.items() if k != "pgvector")
        and checks.get("pgvector", "missing") != "missing"
    )
    return FastJSON(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )

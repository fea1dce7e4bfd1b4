"""The FastAPI application: Zep v2 API, probes, error mapping, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engram.api import health, v1, zep
from engram.api.audit import install_audit
from engram.api.errors import install_error_handlers
from engram.api.metrics import install_metrics
from engram.api.middleware import BodyLimit, DropEmptyQueryParams, PathOnlyRedirects
from engram.api.openapi import install_openapi
from engram.api.responses import FastJSON
from engram.runtime import Runtime

__all__ = ["create_app"]


def create_app(runtime: Runtime) -> FastAPI:
    """Build the app around a prepared runtime (database migrated, embedder loaded)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.open(worker=runtime.settings.worker.enabled, sampler=True, watchdog=True)
        writer = app.state.audit_writer
        writer.start()
        metrics_port = app.state.metrics_port
        if metrics_port is not None:
            await metrics_port.start()
        try:
            yield
        finally:
            if metrics_port is not None:
                await metrics_port.stop()
            await writer.stop()  # the last summaries and delayed records, while the pool is open
            await runtime.close()
            checkpointer = getattr(app.state, "checkpointer", None)
            if checkpointer is not None:
                checkpointer.flush()  # the chain heads reached since the last checkpoint

    app = FastAPI(
        title="Engram Memory",
        version="0.1.0",
        summary="Self-hosted memory for AI agents (Zep v2 compatible)",
        lifespan=lifespan,
        default_response_class=FastJSON,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    install_metrics(app, runtime)  # inside DropEmptyQueryParams, which copies the scope
    install_audit(app, runtime)  # likewise; outside the metrics, so they time the route only
    app.add_middleware(DropEmptyQueryParams)
    app.add_middleware(PathOnlyRedirects)
    # Outermost: an oversized body is refused before anything else reads it.
    app.add_middleware(BodyLimit, limit=runtime.settings.limits.max_body_bytes)
    app.include_router(health.router)
    app.include_router(zep.router)
    app.include_router(v1.router)
    install_openapi(app)
    return app

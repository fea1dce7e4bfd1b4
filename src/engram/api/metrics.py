"""GET /metrics in Prometheus' text format, and wiring the metrics into the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engram.api.timing import RequestMetrics

if TYPE_CHECKING:
    from engram.runtime import Runtime

__all__ = ["install_metrics", "router"]

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Everything in the registry; in-memory only (the database is sampled elsewhere).

    Async on purpose: it runs on the event loop, like the sampler that updates the
    gauges, so a scrape never sees half an update.
    """
    runtime: Runtime = request.app.state.runtime
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, runtime: Runtime) -> None:
    """Add /metrics and the request timing middleware (call before scope-copying ones)."""
    m = runtime.metrics
    m.pool_stats = lambda: runtime.db.pool.get_stats() if runtime.db is not None else None
    app.add_middleware(RequestMetrics, metrics=m)
    app.include_router(router)

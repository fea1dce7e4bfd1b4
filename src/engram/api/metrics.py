"""GET /metrics in Prometheus' text format, and wiring the metrics into the app.

On the API port, /metrics without credentials shows liveness figures only (the pool,
whether database sampling works): the others (traffic per route, rows per table, the
job queue, keys) add up every tenant's activity. The platform's admin (an admin of the
default tenant) sees them all there; Prometheus scrapes them all from
``metrics.port``, a port of their own that answers nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engram.api.deps import AuthenticatorDep, RuntimeDep
from engram.api.timing import RequestMetrics
from engram.auth.principal import Permission
from engram.errors import ForbiddenError, UnavailableError

if TYPE_CHECKING:
    from engram.config import Settings
    from engram.metrics.registry import Metrics
    from engram.runtime import Runtime

__all__ = ["MetricsPort", "install_metrics", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep, auth: AuthenticatorDep) -> Response:
    """The liveness figures; all of them for the platform's admin. In-memory only (the
    database is sampled elsewhere).

    Async on purpose: it runs on the event loop, like the sampler that updates the
    gauges, so a scrape never sees half an update.
    """
    m = runtime.metrics
    header = request.headers.get("authorization")
    if not header:
        return Response(generate_latest(m.public_registry), media_type=CONTENT_TYPE_LATEST)
    if runtime.db is None:
        raise UnavailableError("the server is still starting", hint="retry in a moment")
    principal = await auth.authenticate(header, runtime.db)
    if not principal.can(Permission.TENANTS_MANAGE):
        raise ForbiddenError(
            "every metric sums all tenants' activity: only the platform's admin sees them",
            reason="permission",
            hint="send no credentials for the liveness figures, use an admin key of the "
            "default tenant, or scrape metrics.port",
        )
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsPort:
    """Every figure at ``GET /metrics`` on a port of its own, without credentials; one
    request per connection (HTTPS with the API's certificate when it has one)."""

    def __init__(self, metrics: Metrics, settings: Settings) -> None:
        self.metrics = metrics
        self.host = settings.host
        self.port = settings.metrics.port
        self.header_timeout_s = settings.header_timeout_s
        self.ssl: ssl.SSLContext | None = None
        if settings.tls.certfile and settings.tls.keyfile:
            self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl.load_cert_chain(settings.tls.certfile, settings.tls.keyfile)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.ssl)
        logger.info("metrics on port %s", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout_s)
            words = head.split(b"\r\n", 1)[0].split()
            path = words[1].split(b"?", 1)[0] if len(words) == 3 else b""
            if words[:1] in ([b"GET"], [b"HEAD"]) and path == b"/metrics":
                status, body = b"200 OK", generate_latest(self.metrics.registry)
                kind = CONTENT_TYPE_LATEST.encode()
            else:
                status, body, kind = b"404 Not Found", b"only GET /metrics here\n", b"text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + (b"" if words[:1] == [b"HEAD"] else body)
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def install_metrics(app: FastAPI, runtime: Runtime) -> None:
    """Add /metrics and the request timing middleware (call before scope-copying ones),
    and ``app.state.metrics_port`` (None unless ``metrics.port`` is set; the lifespan
    starts and stops it)."""
    m = runtime.metrics
    m.pool_stats = lambda: runtime.db.pool.get_stats() if runtime.db is not None else None
    app.add_middleware(RequestMetrics, metrics=m)
    app.include_router(router)
    port = runtime.settings.metrics.port
    app.state.metrics_port = MetricsPort(m, runtime.settings) if port else None

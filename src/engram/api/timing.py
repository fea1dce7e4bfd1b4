"""Request timing by route template, and search latency and hit rate."""

from __future__ import annotations

import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engram.metrics.registry import Metrics

__all__ = ["SEARCH_ROUTES", "RequestMetrics", "route_template"]

# The user-facing searches (GET memory's relevant_facts is part of reading memory).
SEARCH_ROUTES = frozenset({"/api/v2/sessions/search", "/v1/search", "/v1/facts/search"})


def route_template(scope: Scope) -> str:
    """The matched route's full path template (``/api/v2/sessions/{session_id}``), never
    the raw path, so that ids never become label values; ``unmatched`` for a 404.

    FastAPI keeps included routers nested, so the matched route knows only its own part
    of the template; the routers' prefixes (static in Engram) are the leading segments
    of the request path that the route's template does not cover.
    """
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return "unmatched"
    raw = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    own = path.strip("/").split("/") if path.strip("/") else []
    segments = raw.strip("/").split("/") if raw.strip("/") else []
    if ":path}" in path or len(segments) < len(own):
        return path
    values = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    head = segments[: len(segments) - len(own)]
    prefix = [f"{{{values[s]}}}" if s in values else s for s in head]
    return "/" + "/".join(prefix + own) if prefix or own else "/"


def _has_hits(body: bytes) -> bool:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    results = doc.get("results") if isinstance(doc, dict) else None
    return isinstance(results, list) and len(results) > 0


class RequestMetrics:
    """Observe every HTTP request's latency; for searches also whether anything was found.

    Must sit inside any middleware that copies the scope, as the router records the
    matched route in the scope it is given.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises
        body = bytearray()
        capture = False

        async def send_and_watch(message: Message) -> None:
            nonlocal status, capture
            if message["type"] == "http.response.start":
                status = int(message["status"])
                capture = 200 <= status < 300 and route_template(scope) in SEARCH_ROUTES
            elif capture and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            m = self.metrics
            m.requests.labels(route, scope["method"], f"{status // 100}xx").observe(elapsed)
            if capture:
                m.search_latency.labels(route).observe(elapsed)
                m.searches.labels(route).inc()
                if _has_hits(bytes(body)):
                    m.searches_with_hits.labels(route).inc()

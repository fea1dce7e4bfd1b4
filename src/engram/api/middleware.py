"""ASGI middleware."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ZEP_PREFIX", "DropEmptyQueryParams"]

ZEP_PREFIX = "/api/v2/"


class DropEmptyQueryParams:
    """Treat ``?name=`` as an absent parameter.

    zep-python 2.x sends unset optional query parameters as empty strings (for example
    ``minRating=`` on every GET memory); they mean "not given", not "invalid number".
    Only under the Zep API's prefix: the native API refuses them like any bad value.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("query_string")
            and scope.get("path", "").startswith(ZEP_PREFIX)
        ):
            raw: bytes = scope["query_string"]
            if b"=&" in raw + b"&":
                pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
                kept = urlencode([(k, v) for k, v in pairs if v != ""])
                scope = {**scope, "query_string": kept.encode("latin-1")}
        await self.app(scope, receive, send)

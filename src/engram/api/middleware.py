"""ASGI middleware."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ZEP_PREFIX", "DropEmptyQueryParams", "PathOnlyRedirects"]

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


class PathOnlyRedirects:
    """Give a redirect's ``Location`` as a path, never as an absolute URL.

    Starlette's trailing-slash redirect builds an absolute URL from the request's
    ``Host`` header, which the client chose: a forged one sent a redirect to any host
    (a cache or proxy in front could serve it to others). A path keeps the client on
    the host it asked (RFC 9110 allows a relative reference).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = MutableHeaders(scope=message)
                location = headers.get("location")
                if location is not None:
                    url = urlsplit(location)
                    if url.scheme or url.netloc:
                        path = "/" + url.path.lstrip("/")  # "//host" would name a host
                        headers["location"] = path + (f"?{url.query}" if url.query else "")
            await send(message)

        await self.app(scope, receive, send_relative)

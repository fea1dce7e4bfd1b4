"""ASGI middleware."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engram.api.errors import error_response
from engram.errors import TooLargeError

__all__ = ["ZEP_PREFIX", "BodyLimit", "DropEmptyQueryParams", "PathOnlyRedirects"]

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


class BodyLimit:
    """Answer 413 to a request body past ``limit`` bytes without reading it.

    Outermost, before authentication: by its Content-Length, the body is refused before
    a byte of it is read, and the connection closed; sent in chunks (no length), it is
    read up to the limit, then refused, or handed on whole. Either way no request holds
    more than the limit in memory.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            # The HTTP server delivers no more than the length (and refuses one that is no
            # number).
            declared = int(length) if length.isdigit() else 0
            if declared > self.limit:
                what = f"is {declared} bytes; the limit is"
                await self._refuse(scope, receive, send, what, close=True)
                return
            await self.app(scope, receive, send)
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            await self._chunked(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send, "is longer than the limit of", close=False)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: bytes | None = b"".join(chunks)
        del chunks

        async def replay() -> Message:
            nonlocal whole
            if whole is None:
                return await receive()
            body, whole = whole, None
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, what: str, *, close: bool
    ) -> None:
        error = TooLargeError(
            f"the request body {what} {self.limit} bytes",
            hint="split the request (fewer messages each time), or raise limits.max_body_bytes",
        )
        # Closing the connection spares reading a body not yet sent. Once part of it has
        # been read, the HTTP server discards the rest as it comes instead: closing with
        # unread data resets the connection, which can destroy the answer in flight.
        headers = {"Connection": "close"} if close else None
        await error_response(error, headers)(scope, receive, send)

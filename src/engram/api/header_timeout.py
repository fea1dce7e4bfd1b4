"""Close connections that do not finish sending a request's headers in time.

uvicorn waits for headers as long as a client likes, so a few thousand sockets that
send half a request line each hold as many connections (and file descriptors) for
good. Each connection gets ``timeout`` seconds from when it opens, and from the first
byte of each later request on it, to send a request's complete headers; the body and
the response are not limited here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["with_header_timeout"]


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Idle until the next request: uvicorn's keep-alive timeout governs that.
        self._disarm()
        super().on_response_complete()


def with_header_timeout(timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol (httptools) with a header deadline of ``timeout`` seconds."""
    return type("HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout": timeout})

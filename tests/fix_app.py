"""The Engram app in process (create_app over httpx.ASGITransport) on a real embedded
PostgreSQL, one for the whole session.

The app is the one `engram serve` runs: the same settings factory, Runtime and
create_app, its ASGI lifespan driven here as uvicorn drives it (pool, key provider,
in-process extraction worker, metrics sampler, audit checkpoints). It runs on an event
loop in a thread of its own, so that tests stay synchronous: `client` is an
``httpx.Client`` whose transport hands each request to that loop.

A test that needs other settings starts an app of its own, as `engram serve --...`
would be started, for its module::

    @pytest.fixture(scope="module")
    def quiet() -> Iterator[App]:
        with running_app(short_tmpdir("egq-") / "d", worker={"enabled": False}) as app:
            yield app

    def test_something(quiet: App) -> None:
        with quiet.client() as http:
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import traceback
from collections.abc import Coroutine, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from engram.api import create_app
from engram.config import load_settings
from engram.runtime import Runtime
from engram.store.embedded import EmbeddedPostgres
from tests.fix_server import short_tmpdir

T = TypeVar("T")

# What a request may take before the test gives up on it (the app's own limits are lower).
REQUEST_TIMEOUT_S = 120


class Loop:
    """An asyncio event loop running in a thread of its own, for sync code to use."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="engram-app-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = REQUEST_TIMEOUT_S) -> T:
        """Run ``coro`` on the loop and wait for its result (or its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """End what is left on the loop, as asyncio.run does at its end, and stop it."""

        async def finish() -> None:
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        try:
            self.run(finish(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class AppTransport(httpx.BaseTransport):
    """httpx.ASGITransport for a sync client: each request runs on the app's loop.

    An exception the app does not handle is raised in the test (with its traceback), as
    with starlette's TestClient, where a server would answer 500 and log it.
    """

    def __init__(self, asgi: ASGIApp, loop: Loop) -> None:
        self._asgi = httpx.ASGITransport(app=asgi)
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the body as bytes, which the async transport can stream too

        async def send() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers.raw,
                stream=httpx.ByteStream(body), extensions=response.extensions,
            )  # fmt: skip

        return self._loop.run(send())


class _Lifespan:
    """The ASGI lifespan protocol, spoken to the app as a server does."""

    def __init__(self, asgi: ASGIApp) -> None:
        self._asgi = asgi
        self._to_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(
            self._asgi(scope, self._to_app.get, self._from_app.put), name="engram-lifespan"
        )
        await self._say("lifespan.startup")

    async def shutdown(self) -> None:
        await self._say("lifespan.shutdown")
        assert self._task is not None
        await self._task

    async def _say(self, what: str) -> None:
        assert self._task is not None
        await self._to_app.put({"type": what})
        reply = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({reply, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            await self._task  # raises what the app failed with
            raise RuntimeError(f"the app ended its lifespan without answering {what}")
        message = reply.result()
        if message["type"] != f"{what}.complete":
            await self._task  # starlette raises what failed once it has said so
            raise RuntimeError(f"{message['type']}: {message.get('message', '')}")


class _Errors(logging.Handler):
    """Errors the app logged with a traceback (a server's log would show them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            trace = "".join(traceback.format_exception(*record.exc_info))
            self.seen.append(f"{record.name}: {record.getMessage()}\n{trace}")


@dataclass
class App:
    """A running in-process app and how to reach it and its database (as tests.fix_server's
    Server: ``api_key``, ``data_dir``, ``pg``, ``superuser()``, ``client()``)."""

    asgi: FastAPI
    runtime: Runtime
    loop: Loop
    data_dir: Path
    api_key: str
    base_url: str = "http://engram.test"
    _lifespan: _Lifespan | None = None
    _errors: _Errors = field(default_factory=_Errors)

    @property
    def pg(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.data_dir)

    def superuser(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection to the engram database (for inspecting rows directly)."""
        return psycopg.connect(self.pg.dsn("postgres", "engram"), autocommit=True)

    def client(
        self, api_key: str | None = None, *, anonymous: bool = False, **headers: str
    ) -> httpx.Client:
        """A client of the app with the admin API key, another key, or none (anonymous)."""
        key = api_key or self.api_key
        auth = {} if anonymous else {"Authorization": f"Api-Key {key}"}
        return httpx.Client(
            base_url=self.base_url, transport=AppTransport(self.asgi, self.loop),
            headers={**auth, **headers}, timeout=30,
        )  # fmt: skip

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the app's loop (where ``runtime.db`` and the others live)."""
        return self.loop.run(coro)

    def asgi_for_any_loop(self) -> ASGIApp:
        """The app for a client that runs an event loop of its own (schemathesis): each
        request still runs on the app's loop; the lifespan stays this fixture's."""

        async def bridged(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":  # refusing the lifespan: "no lifespan support"
                raise RuntimeError("the fixture runs the app's lifespan")
            caller = asyncio.get_running_loop()

            async def on_caller(coro: Coroutine[Any, Any, T]) -> T:
                return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, caller))

            async def recv() -> MutableMapping[str, Any]:
                return await on_caller(receive())

            async def snd(message: MutableMapping[str, Any]) -> None:
                await on_caller(send(message))

            done = asyncio.run_coroutine_threadsafe(self.asgi(scope, recv, snd), self.loop.loop)
            await asyncio.wrap_future(done)

        return bridged

    def logged_errors(self) -> list[str]:
        """Every error logged with a traceback since the app started."""
        return list(self._errors.seen)

    def start(self) -> None:
        logging.getLogger().addHandler(self._errors)
        lifespan = _Lifespan(self.asgi)
        self.loop.run(lifespan.startup(), timeout=None)
        self._lifespan = lifespan  # started: stop() ends it

    def stop(self) -> None:
        try:
            if self._lifespan is not None:
                self.loop.run(self._lifespan.shutdown(), timeout=None)
        finally:
            self.loop.close()
            self.runtime.shutdown()
            logging.getLogger().removeHandler(self._errors)


@contextlib.contextmanager
def running_app(data_dir: Path, *, api_key: str | None = None, **settings: Any) -> Iterator[App]:
    """An app on an embedded PostgreSQL in ``data_dir``, built as `engram serve` builds it:
    ``settings`` are the Settings fields it takes (nested ones as dicts, e.g.
    ``worker={"enabled": False}``), over the ENGRAM_* environment."""
    key = api_key or secrets.token_urlsafe(24)
    runtime = Runtime(load_settings(None, data_dir=data_dir, api_key=key, **settings))
    try:
        runtime.prepare()
    except BaseException:
        runtime.shutdown()
        raise
    app = App(create_app(runtime), runtime, Loop(), data_dir, key)
    try:
        app.start()
    except BaseException:
        app.stop()
        raise
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="session")
def app() -> Iterator[App]:
    """One in-process app for the session; tests keep apart by fresh ids (`uid`)."""
    with running_app(short_tmpdir("ega-") / "d") as running:
        yield running


@pytest.fixture
def client(app: App) -> Iterator[httpx.Client]:
    """A client of the session's app with its admin API key."""
    with app.client() as http:
        yield http


@pytest.fixture
def session_id(client: httpx.Client, uid: str) -> str:
    """A fresh user `u-<uid>` with a session `s-<uid>` in the session's app."""
    assert client.post("/api/v2/users", json={"user_id": f"u-{uid}"}).status_code == 201
    r = client.post("/api/v2/sessions", json={"session_id": f"s-{uid}", "user_id": f"u-{uid}"})
    assert r.status_code == 201, r.text
    return f"s-{uid}"

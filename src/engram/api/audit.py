"""Every request leaves an audit record, refusals included; only the PUBLIC routes
(probes, metrics, the API's description) do not.

A request's record is written as its response starts, in a transaction of its own
(the route's has committed by then), retried a few times. If it still cannot be
written, the server log says so at once (request id, tenant, actor, action, status),
the record waits in a backlog that is written later, marked late, and:

- a read is not served: the client gets 500 (no data leaves whose access is not on
  the record) and the record says so;
- a write that succeeded is answered as it is, with ``X-Audit-Record: delayed``: it
  has committed, and a 500 would tell the client it had not (and invite a retry that
  writes twice);
- a refusal is answered as it is.

Requests nobody authenticated are recorded one by one up to a limit per client
address and window; the rest are counted in a summary per address at the end of the
window (``engram.audit.anonymous``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from fastapi import FastAPI
from psycopg_pool import PoolTimeout
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engram.api.errors import describe_db_error
from engram.api.timing import route_template
from engram.audit.anonymous import AnonymousTally
from engram.audit.backlog import Backlog
from engram.audit.checkpoints import Checkpointer, from_settings
from engram.audit.log import record_now
from engram.auth.principal import Permission, Principal
from engram.auth.routes import permission_for
from engram.errors import UnavailableError

if TYPE_CHECKING:
    from engram.runtime import Runtime

__all__ = ["AuditContext", "AuditMiddleware", "AuditWriter", "audit_context", "install_audit"]

logger = logging.getLogger(__name__)

SCOPE_KEY = "engram.audit"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_RETRY_WAITS = (0.05, 0.2)  # seconds before the second and third attempt
_READS = frozenset({Permission.MEMORY_READ, Permission.AUDIT_READ, Permission.AUTHENTICATED})


@dataclass
class AuditContext:
    """What the request has revealed so far; filled in by the auth dependency."""

    request_id: str
    action: str | None = None  # "METHOD /route/{template}"; None: auth did not run
    principal: Principal | None = None
    reason: str | None = None
    details: dict[str, Any] | None = None


def audit_context(scope: Scope) -> AuditContext | None:
    ctx = scope.get(SCOPE_KEY)
    return ctx if isinstance(ctx, AuditContext) else None


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    return "error" if status >= 500 else "failure"


# Path parameters that name a person or their session: the record carries pseudonyms.
_SUBJECT_PARAMS = {"user_id": "user", "session_id": "session"}


def _subjects(scope: Scope) -> list[tuple[str, str]]:
    params = scope.get("path_params") or {}
    return [(kind, str(params[p])) for p, kind in _SUBJECT_PARAMS.items() if params.get(p)]


def _action(scope: Scope, ctx: AuditContext) -> str | None:
    """The record's action; None for a PUBLIC route (not recorded)."""
    if ctx.action is not None:
        return ctx.action
    method, template = scope.get("method", "?"), route_template(scope)
    if template != "unmatched" and permission_for(method, template) is Permission.PUBLIC:
        return None
    return f"{method} {template}"  # refused before authentication: 404, 405, redirect


def _is_read(scope: Scope) -> bool:
    method = scope.get("method", "GET")
    return method in ("GET", "HEAD") or permission_for(method, route_template(scope)) in _READS


def _why(exc: Exception) -> str:
    return describe_db_error(exc) if isinstance(exc, psycopg.Error) else type(exc).__name__


class AuditWriter:
    """Writes records for the middleware: retries, the backlog of delayed records, the
    anonymous-request tally and its summaries (``flush()``, every window)."""

    def __init__(self, runtime: Runtime, checkpointer: Checkpointer | None) -> None:
        self.runtime = runtime
        self.checkpointer = checkpointer
        a = runtime.settings.audit
        self.window_s = a.anonymous_window_s
        self.tally = AnonymousTally(a.anonymous_records_per_window)
        self.backlog = Backlog()
        self._task: asyncio.Task[None] | None = None

    def _appended(self, tenant: str, seq: int, digest: str) -> None:
        if self.checkpointer is not None:
            self.checkpointer.appended(tenant, seq, digest)

    async def write(self, tenant: str, fields: dict[str, Any]) -> Exception | None:
        """Write one record, retrying; the last error if it could not be written."""
        db = self.runtime.db
        assert db is not None
        error: Exception | None = None
        for wait in (0.0, *_RETRY_WAITS):
            if wait:
                await asyncio.sleep(wait)
            try:
                seq, digest = await record_now(db, tenant, **fields)
            except PoolTimeout as exc:  # it waited pool.timeout_s already: no more
                return exc
            except Exception as exc:
                error = exc
                continue
            self._appended(tenant, seq, digest)
            return None
        return error

    def delay(self, tenant: str, fields: dict[str, Any], error: Exception) -> None:
        """Log a record that could not be written and keep it for later."""
        logger.error(
            "audit record not written (kept to retry): %s; cause: %s",
            orjson.dumps(
                {
                    "tenant": tenant,
                    "request_id": fields.get("request_id"),
                    "at": fields["at"].isoformat(),
                    "actor": fields.get("actor"),
                    "action": fields.get("action"),
                    "status": fields.get("status"),
                    "outcome": fields.get("outcome"),
                    "client": fields.get("client"),
                },
                option=orjson.OPT_NON_STR_KEYS,
            ).decode(errors="replace"),
            _why(error),
        )
        self.runtime.metrics.audit_delayed.inc()
        self.backlog.add(tenant, fields)
        self.runtime.metrics.audit_backlog.set(len(self.backlog))

    async def flush(self) -> None:
        """Write the delayed records, then the window's anonymous summaries."""
        db = self.runtime.db
        if db is None:
            return
        await self.backlog.write(db, self._appended)
        summaries = self.tally.take()
        tenant = self.runtime.settings.default_tenant
        for n, s in enumerate(summaries):
            fields = {
                "actor": "anonymous",
                "action": "anonymous requests",
                "resource": "*",
                "outcome": s.outcome,
                "client": s.client,
                "details": s.details(),
                "at": datetime.now(UTC),
            }
            error = await self.write(tenant, fields)
            if error is not None:
                logger.warning("cannot write the anonymous-request summaries yet: %s", _why(error))
                self.tally.give_back(summaries[n:])  # the next window says them
                break
        self.runtime.metrics.audit_backlog.set(len(self.backlog))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.window_s)
            try:
                await self.flush()
            except Exception:
                logger.exception("cannot write the audit summaries")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engram-audit-summaries")

    async def stop(self) -> None:
        """Stop the task and flush once more (before the database pool closes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()
        if len(self.backlog):
            logger.error(
                "%d audit record(s) still not written at shutdown (each logged above)",
                len(self.backlog),
            )


def _is_outage(error: Exception | None) -> bool:
    """The database (or the pool's access to it) is gone, not the record refused."""
    return isinstance(error, (psycopg.OperationalError, PoolTimeout, UnavailableError))


_WITHHELD = orjson.dumps(
    {
        "message": "the audit record of this read could not be written, so nothing is served",
        "hint": "retry shortly; the server log names the request id",
    }
)


class AuditMiddleware:
    """Must sit inside any middleware that copies the scope (as RequestMetrics)."""

    def __init__(self, app: ASGIApp, runtime: Runtime, writer: AuditWriter) -> None:
        self.app = app
        self.runtime = runtime
        self.writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        ctx = AuditContext(given if _REQUEST_ID.match(given) else uuid.uuid4().hex)
        scope[SCOPE_KEY] = ctx
        started = withheld = False

        async def send_audited(message: Message) -> None:
            nonlocal started, withheld
            if withheld:
                return  # the body of a read whose record could not be written
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                error = await self._record(scope, ctx, status)
                written = error is None
                if not written and status < 400 and _is_read(scope):
                    withheld = True
                    await self._withhold(ctx, send, outage=_is_outage(error))
                    return
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", ctx.request_id)
                if not written:
                    headers.append("x-audit-record", "delayed")
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception:
            if not started:
                await self._record(scope, ctx, 500)
            raise

    @staticmethod
    async def _withhold(ctx: AuditContext, send: Send, *, outage: bool) -> None:
        # The database went away between the work and its record: 503 tells the client
        # to retry; any other failure to record is the server's fault.
        await send(
            {
                "type": "http.response.start",
                "status": 503 if outage else 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_WITHHELD)).encode()),
                    (b"x-request-id", ctx.request_id.encode()),
                    (b"x-audit-record", b"delayed"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _WITHHELD})

    async def _record(self, scope: Scope, ctx: AuditContext, status: int) -> Exception | None:
        """Record the request; the error if the record had to be delayed."""
        action = _action(scope, ctx)
        if action is None or self.runtime.db is None:
            return None
        p = ctx.principal
        tenant = p.tenant if p is not None else self.runtime.settings.default_tenant
        client = scope.get("client")
        address = client[0] if client else None
        at = datetime.now(UTC)
        if p is None and not self.writer.tally.admit(address, action, status, at):
            return None  # counted in the window's summary of this address
        fields: dict[str, Any] = {
            "actor": p.actor if p is not None else "anonymous",
            "action": action,
            "resource": scope.get("path", ""),
            "outcome": _outcome(status),
            "status": status,
            "reason": ctx.reason,
            "request_id": ctx.request_id,
            "client": address,
            "details": ctx.details,
            "subjects": _subjects(scope),
            "at": at,
        }
        error = await self.writer.write(tenant, fields)
        if error is None:
            return None
        if status < 400 and _is_read(scope):  # not served: the record says so
            fields.update(
                status=500,
                outcome="error",
                reason="not served: its audit record could not be written in time",
            )
        self.writer.delay(tenant, fields, error)
        return error


def install_audit(app: FastAPI, runtime: Runtime) -> None:
    """Add the audit middleware, the checkpoint writer (``app.state.checkpointer``;
    flushed at shutdown) and the record writer (``app.state.audit_writer``; started and
    stopped by the lifespan). Call before scope-copying middleware."""
    store, signer = from_settings(runtime.settings)
    checkpointer = Checkpointer(store, signer, runtime.settings.audit.checkpoint_interval_s)
    app.state.checkpointer = checkpointer
    writer = AuditWriter(runtime, checkpointer)
    app.state.audit_writer = writer
    app.add_middleware(AuditMiddleware, runtime=runtime, writer=writer)

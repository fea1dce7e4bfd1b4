"""Every authenticated API operation leaves an audit record, written before the
response leaves (a failed write turns a success into a 500, or a 503 when the database
is unavailable: nothing unaudited is served). Probes and metrics (PUBLIC routes) are not
recorded."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engram.api.errors import error_response
from engram.audit.checkpoints import Checkpointer, from_settings
from engram.audit.log import record_now
from engram.auth.principal import Principal
from engram.errors import UnavailableError

if TYPE_CHECKING:
    from engram.runtime import Runtime

__all__ = ["AuditContext", "AuditMiddleware", "audit_context", "install_audit"]

logger = logging.getLogger(__name__)

SCOPE_KEY = "engram.audit"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class AuditContext:
    """What the request has revealed so far; filled in by the auth dependency."""

    request_id: str
    action: str | None = None  # "METHOD /route/{template}"; None: not an audited route
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


class AuditMiddleware:
    """Must sit inside any middleware that copies the scope (as RequestMetrics)."""

    def __init__(self, app: ASGIApp, runtime: Runtime, checkpointer: Checkpointer | None) -> None:
        self.app = app
        self.runtime = runtime
        self.checkpointer = checkpointer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        ctx = AuditContext(given if _REQUEST_ID.match(given) else uuid.uuid4().hex)
        scope[SCOPE_KEY] = ctx
        started = refused = False

        async def send_audited(message: Message) -> None:
            nonlocal started, refused
            if refused:
                return  # the rest of a response replaced by the 503 below
            if message["type"] == "http.response.start":
                started = True
                try:
                    await self._record(scope, ctx, int(message["status"]))
                except UnavailableError as exc:
                    # The database went away between the work and its record: the
                    # client is told to retry, not that Engram failed.
                    refused = True
                    response = error_response(
                        UnavailableError(
                            f"{exc.message}; the request may have been applied, but its "
                            "audit record could not be written",
                            hint="retry shortly (a retried create may find the object exists)",
                        )
                    )
                    response.headers["x-request-id"] = ctx.request_id
                    await response(scope, receive, send)
                    return
                MutableHeaders(scope=message).append("x-request-id", ctx.request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception:
            if not started:
                await self._record(scope, ctx, 500)
            raise

    async def _record(self, scope: Scope, ctx: AuditContext, status: int) -> None:
        if ctx.action is None or self.runtime.db is None:
            return
        p = ctx.principal
        tenant = p.tenant if p is not None else self.runtime.settings.default_tenant
        client = scope.get("client")
        try:
            seq, digest = await record_now(
                self.runtime.db,
                tenant,
                actor=p.actor if p is not None else "anonymous",
                action=ctx.action,
                resource=scope.get("path", ""),
                outcome=_outcome(status),
                status=status,
                reason=ctx.reason,
                request_id=ctx.request_id,
                client=client[0] if client else None,
                details=ctx.details,
                subjects=_subjects(scope),
            )
        except Exception:
            logger.exception("cannot write the audit record of %s", ctx.action)
            if status < 400:
                raise  # never serve data whose access is not on the record
            return
        if self.checkpointer is not None:
            self.checkpointer.appended(tenant, seq, digest)


def install_audit(app: FastAPI, runtime: Runtime) -> None:
    """Add the audit middleware and the checkpoint writer (``app.state.checkpointer``;
    flushed at shutdown). Call before scope-copying middleware."""
    store, signer = from_settings(runtime.settings)
    checkpointer = Checkpointer(store, signer, runtime.settings.audit.checkpoint_interval_s)
    app.state.checkpointer = checkpointer
    app.add_middleware(AuditMiddleware, runtime=runtime, checkpointer=checkpointer)

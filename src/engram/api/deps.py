"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from engram.api.admission import Admission
from engram.api.audit import audit_context
from engram.api.timing import route_template
from engram.auth.authenticate import Authenticator
from engram.auth.principal import Principal
from engram.auth.routes import permission_for
from engram.config import LimitSettings
from engram.crypto.protect import Protector
from engram.embed.batcher import BatchingEmbedder
from engram.errors import EngramError, ForbiddenError, UnavailableError
from engram.runtime import Runtime
from engram.store.db import Database

__all__ = [
    "Auth",
    "AuthenticatorDep",
    "CurrentPrincipal",
    "Db",
    "Embed",
    "Limits",
    "Protect",
    "ReadProtected",
    "RuntimeDep",
    "Tenant",
]


# Every dependency is async: FastAPI runs a plain `def` one in a worker thread, a thread
# hop per dependency per request for what is an attribute read.
async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _db(runtime: Annotated[Runtime, Depends(_runtime)]) -> Database:
    if runtime.db is None:
        raise UnavailableError("the server is still starting", hint="retry in a moment")
    if runtime.database_down:
        raise UnavailableError(
            "the database is unavailable: the embedded PostgreSQL is being restarted",
            hint="retry in a few seconds",
        )
    return runtime.db


async def _embedder(runtime: Annotated[Runtime, Depends(_runtime)]) -> BatchingEmbedder:
    if runtime.batcher is None:
        raise UnavailableError("the embedder is not loaded yet", hint="retry in a moment")
    return runtime.batcher


async def _limits(runtime: Annotated[Runtime, Depends(_runtime)]) -> LimitSettings:
    return runtime.settings.limits


async def _authenticator(
    request: Request, runtime: Annotated[Runtime, Depends(_runtime)]
) -> Authenticator:
    auth: Authenticator | None = getattr(request.app.state, "authenticator", None)
    if auth is None:
        auth = Authenticator(runtime.settings, runtime.api_key)
        request.app.state.authenticator = auth
    return auth


async def _admission(request: Request, runtime: Annotated[Runtime, Depends(_runtime)]) -> Admission:
    admission: Admission | None = getattr(request.app.state, "admission", None)
    if admission is None:
        admission = Admission(runtime.settings.limits)
        request.app.state.admission = admission
    return admission


async def _identify(request: Request, auth: Authenticator, db: Database) -> Principal:
    """Who calls (401 if nobody valid), and whether the route's declared permission
    (engram.auth.routes) allows it (403 otherwise, also for a route that declares none).

    ``Authorization: Api-Key <key>`` (what the Zep SDKs send) or ``Bearer <key or JWT>``.
    """
    template = route_template(request.scope)
    permission = permission_for(request.method, template)
    ctx = audit_context(request.scope)
    if ctx is not None:
        ctx.action = f"{request.method} {template}"
    try:
        principal = await auth.authenticate(request.headers.get("authorization", ""), db)
        if ctx is not None:
            ctx.principal = principal
            ctx.details = {"auth": principal.method, "role": principal.role.value}
        if permission is None:
            raise ForbiddenError(
                f"{request.method} {template} declares no permission, so it is refused",
                reason="undeclared_route",
                hint="add the route to engram.auth.routes.ROUTE_PERMISSIONS",
            )
        if not principal.can(permission):
            raise ForbiddenError(
                f"role {principal.role.value!r} lacks permission {permission.value!r}"
                f" for {request.method} {template}",
                reason="permission",
                hint="use credentials with a role that has it (docs/security.md, roles)",
            )
    except EngramError as exc:
        if ctx is not None:
            ctx.reason = exc.message
        raise
    return principal


async def _authenticate(
    request: Request,
    auth: Annotated[Authenticator, Depends(_authenticator)],
    admission: Annotated[Admission, Depends(_admission)],
    db: Annotated[Database, Depends(_db)],
) -> AsyncIterator[Principal]:
    """The caller, allowed the route (see _identify); then a slot of the caller's key and
    tenant for the request's run (429 when either is over its limits, see
    engram.api.admission)."""
    principal = await _identify(request, auth, db)
    try:
        release = admission.admit(principal)
    except EngramError as exc:
        ctx = audit_context(request.scope)
        if ctx is not None:
            ctx.reason = exc.message
        raise
    try:
        yield principal
    finally:
        release()


async def authenticate(request: Request) -> Principal:
    """The caller of the route being served, as its dependencies would find it (for a
    check that must come after the credentials' but runs before the dependencies); it
    takes no admission slot."""
    runtime = await _runtime(request)
    return await _identify(request, await _authenticator(request, runtime), await _db(runtime))


async def _tenant(principal: Annotated[Principal, Depends(_authenticate)]) -> str:
    return principal.tenant


async def _auth_method(principal: Annotated[Principal, Depends(_authenticate)]) -> str:
    return principal.method


async def _protector(runtime: Annotated[Runtime, Depends(_runtime)]) -> Protector:
    return runtime.protector


async def _read_protected(principal: Annotated[Principal, Depends(_authenticate)]) -> bool:
    return principal.can_read_protected


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
Db = Annotated[Database, Depends(_db)]
Embed = Annotated[BatchingEmbedder, Depends(_embedder)]
Limits = Annotated[LimitSettings, Depends(_limits)]
AuthenticatorDep = Annotated[Authenticator, Depends(_authenticator)]
# The caller: tenant, actor, role, permissions (``principal.can_read_protected``).
CurrentPrincipal = Annotated[Principal, Depends(_authenticate)]
Auth = Annotated[str, Depends(_auth_method)]
Tenant = Annotated[str, Depends(_tenant)]
Protect = Annotated[Protector, Depends(_protector)]
# Whether the caller may read pii/phi/secret fields in plaintext (else: redacted).
ReadProtected = Annotated[bool, Depends(_read_protected)]

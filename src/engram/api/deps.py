"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from engram.crypto.protect import Protector
from engram.embed.batcher import BatchingEmbedder
from engram.errors import AuthError, UnavailableError
from engram.runtime import Runtime
from engram.store.db import Database

__all__ = ["Auth", "Db", "Embed", "Protect", "ReadProtected", "RuntimeDep", "Tenant"]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _db(runtime: Annotated[Runtime, Depends(_runtime)]) -> Database:
    if runtime.db is None:
        raise UnavailableError("the server is still starting", hint="retry in a moment")
    return runtime.db


def _embedder(runtime: Annotated[Runtime, Depends(_runtime)]) -> BatchingEmbedder:
    if runtime.batcher is None:
        raise UnavailableError("the embedder is not loaded yet", hint="retry in a moment")
    return runtime.batcher


def _authenticate(request: Request, runtime: Annotated[Runtime, Depends(_runtime)]) -> str:
    """Accept ``Authorization: Api-Key <key>`` (what the Zep SDKs send) or ``Bearer <key>``."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() not in ("api-key", "bearer") or not credential.strip():
        raise AuthError(
            "missing credentials",
            hint="send the header 'Authorization: Api-Key <key>'",
        )
    if not hmac.compare_digest(credential.strip().encode(), runtime.api_key.encode()):
        raise AuthError("invalid API key", hint="check the key the server was started with")
    return "api-key"


def _tenant(
    _: Annotated[str, Depends(_authenticate)], runtime: Annotated[Runtime, Depends(_runtime)]
) -> str:
    # One tenant until tenants and roles exist (issue 6); every row already carries it.
    return runtime.settings.default_tenant


def _protector(runtime: Annotated[Runtime, Depends(_runtime)]) -> Protector:
    return runtime.protector


def _read_protected(_: Annotated[str, Depends(_authenticate)]) -> bool:
    # Until roles exist (issue 6), every authenticated caller may read protected fields.
    return True


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
Db = Annotated[Database, Depends(_db)]
Embed = Annotated[BatchingEmbedder, Depends(_embedder)]
Auth = Annotated[str, Depends(_authenticate)]
Tenant = Annotated[str, Depends(_tenant)]
Protect = Annotated[Protector, Depends(_protector)]
# Whether the caller may read pii/phi/secret fields in plaintext (else: redacted).
ReadProtected = Annotated[bool, Depends(_read_protected)]

"""One place that maps errors to HTTP, in Zep's error shape ``{"message": ...}``."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException

from engram.api.responses import FastJSON
from engram.errors import (
    AuthError,
    EngramError,
    ForbiddenError,
    OverloadedError,
    RateLimitedError,
    ValidationError,
)

__all__ = ["describe_db_error", "error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)


def _body(message: str, hint: str | None = None, field: str | None = None) -> dict[str, str]:
    body = {"message": message}
    if hint:
        body["hint"] = hint
    if field:
        body["field"] = field
    return body


def _location(loc: tuple[int | str, ...]) -> str:
    # FastAPI's first element says where (body, query, ...); the rest names the field,
    # which may itself be called "query" or "body". A name may hold what cannot be
    # written as UTF-8 (a lone surrogate): escaped.
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:]
    parts = [str(p).encode("utf-8", "backslashreplace").decode() for p in loc]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def error_response(exc: EngramError, headers: dict[str, str] | None = None) -> FastJSON:
    """The answer to an error: its status, and its message, hint and field as the body."""
    if isinstance(exc, AuthError):
        headers = {**(headers or {}), "WWW-Authenticate": "Api-Key"}
    field = exc.field if isinstance(exc, ValidationError) else None
    body = _body(exc.message, exc.hint, field)
    if isinstance(exc, ForbiddenError | RateLimitedError):
        body["reason"] = exc.reason
    if isinstance(exc, RateLimitedError | OverloadedError):
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after_s)}
    return FastJSON(body, status_code=exc.status, headers=headers)


async def _engram_error(request: Request, exc: Exception) -> FastJSON:
    assert isinstance(exc, EngramError)
    if exc.status >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> FastJSON:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = _location(tuple(err.get("loc", ())))
        if err.get("type") == "json_invalid":
            problems.append(f"malformed JSON: {err.get('ctx', {}).get('error', err['msg'])}")
        else:
            problems.append(f"{where}: {err['msg']}")
    first = exc.errors()[0] if exc.errors() else {}
    return FastJSON(
        _body(
            "bad request: " + "; ".join(problems),
            hint="fix the named fields and send the request again",
            field=_location(tuple(first.get("loc", ()))) if first else None,
        ),
        status_code=400,
    )


def _methods(routes: list[Any], path: str) -> set[str]:
    """Every method some route (into included routers) serves at ``path``."""
    out: set[str] = set()
    for route in routes:
        if hasattr(route, "effective_candidates"):  # an included router
            out |= _methods(route.effective_candidates(), path)
        elif getattr(route, "path_regex", None) is not None and route.path_regex.match(path):
            out |= set(getattr(route, "methods", None) or ())
    return out


async def _http_error(request: Request, exc: Exception) -> FastJSON:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        # The router names only the methods of the first route matching the path, but
        # FastAPI makes one route per method: list all of the resource's (RFC 9110).
        allowed = _methods(request.app.routes, request.url.path)
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return FastJSON(_body(str(exc.detail)), status_code=exc.status_code, headers=headers)


def describe_db_error(exc: psycopg.Error) -> str:
    """What the log says of a database error: its class and SQLSTATE, and PostgreSQL's
    primary message except for a refused value (class 22), whose message, detail and
    context quote the value (a metadata fragment, say); those go to the client only."""
    what = f"{type(exc).__name__} (SQLSTATE {exc.sqlstate or 'none'})"
    if isinstance(exc, psycopg.DataError):
        return what + ": a value was refused (not logged)"
    primary = exc.diag.message_primary if exc.sqlstate else None
    return f"{what}: {primary or (str(exc).strip().splitlines() or [''])[0]}"


async def _database_error(request: Request, exc: Exception) -> FastJSON:
    assert isinstance(exc, psycopg.Error)
    logger.warning(
        "%s %s: database error %s", request.method, request.url.path, describe_db_error(exc)
    )
    db = getattr(request.app.state.runtime, "db", None)
    if isinstance(exc, PoolTimeout) and db is not None:
        # A wait for a connection outside Database's own context managers.
        return await _engram_error(request, db.unavailable(exc))
    if isinstance(exc, psycopg.OperationalError):
        return FastJSON(
            _body("the database is not reachable", "retry shortly; Engram reconnects by itself"),
            status_code=503,
        )
    if isinstance(exc, psycopg.DataError):
        # A value PostgreSQL cannot hold (a NUL character, a number out of range) that
        # input validation let through: the request's fault, and nothing was written.
        diag = exc.diag.message_primary or str(exc).splitlines()[0]
        return FastJSON(
            _body(f"the database refused a value: {diag}", "send values PostgreSQL can store"),
            status_code=400,
        )
    return FastJSON(_body("internal database error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EngramError, _engram_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(psycopg.Error, _database_error)

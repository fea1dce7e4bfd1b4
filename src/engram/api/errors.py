"""One place that maps errors to HTTP, in Zep's error shape ``{"message": ...}``."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from engram.api.responses import FastJSON
from engram.errors import AuthError, EngramError, ForbiddenError, ValidationError

__all__ = ["install_error_handlers"]

logger = logging.getLogger(__name__)


def _body(message: str, hint: str | None = None, field: str | None = None) -> dict[str, str]:
    body = {"message": message}
    if hint:
        body["hint"] = hint
    if field:
        body["field"] = field
    return body


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


async def _engram_error(request: Request, exc: Exception) -> FastJSON:
    assert isinstance(exc, EngramError)
    if exc.status >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Api-Key"} if isinstance(exc, AuthError) else None
    field = exc.field if isinstance(exc, ValidationError) else None
    body = _body(exc.message, exc.hint, field)
    if isinstance(exc, ForbiddenError):
        body["reason"] = exc.reason
    return FastJSON(body, status_code=exc.status, headers=headers)


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


async def _http_error(request: Request, exc: Exception) -> FastJSON:
    assert isinstance(exc, HTTPException)
    return FastJSON(_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def _database_error(request: Request, exc: Exception) -> FastJSON:
    logger.warning("%s %s: database error: %s", request.method, request.url.path, exc)
    if isinstance(exc, psycopg.OperationalError):
        return FastJSON(
            _body("the database is not reachable", "retry shortly; Engram reconnects by itself"),
            status_code=503,
        )
    return FastJSON(_body("internal database error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EngramError, _engram_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(psycopg.Error, _database_error)

"""JSON request bodies read so that nothing in them is silently changed: a number that a
64-bit float cannot hold (1e-400 would be read as 0) or a text PostgreSQL cannot store
(a lone surrogate such as \\ud800, or a NUL character, which PostgreSQL's log would
quote in its refusal) is refused with a 400 naming the field. Every API router takes
``route_class=JsonRoute``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from engram.api.deps import authenticate
from engram.api.timing import route_template
from engram.auth.principal import Permission
from engram.auth.routes import permission_for

__all__ = ["JsonRequest", "JsonRoute", "loads"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_NONZERO = re.compile(r"[1-9]")
_MANTISSA = re.compile(r"[eE]")


class _Unrepresentable(float):
    """A JSON number outside a 64-bit float's range, read as 0 or infinity."""

    text: str


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value) or (value == 0 and _NONZERO.search(_MANTISSA.split(text)[0])):
        marker = _Unrepresentable(value)
        marker.text = text
        return marker
    return value


def loads(body: bytes) -> Any:
    """Python's JSON reader (integers of any size kept), marking out-of-range numbers."""
    try:
        return json.loads(body, parse_float=_number)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # an integer of more than 4,300 digits, say
        raise json.JSONDecodeError(str(exc), body.decode(errors="replace"), 0) from exc


def _unstorable(text: str) -> str | None:
    """What in ``text`` is not text PostgreSQL can store, or None."""
    found = _SURROGATE.search(text)
    if found is not None:
        where = f"at character {found.start()}"
        return f"a lone surrogate (\\u{ord(found.group()):04x}) {where} is not Unicode text"
    nul = text.find("\x00")
    if nul >= 0:  # refused here, not by PostgreSQL, whose log would quote the value
        return f"a NUL character (\\u0000) at character {nul} cannot be stored"
    return None


def _problem(value: str | float) -> str | None:
    if isinstance(value, str):
        found = _unstorable(value)
        return f"{found}; send valid UTF-8 text without it" if found else None
    if isinstance(value, _Unrepresentable):
        return (
            f"{value.text} is beyond what a 64-bit floating-point number holds (magnitudes "
            "from about 5e-324 to 1.8e308, and 0); send a number in that range, or this "
            "one as a string"
        )
    if not math.isfinite(value):
        return "NaN and Infinity are not JSON numbers"
    return None


def _first_problem(body: Any) -> tuple[tuple[int | str, ...], str] | None:
    """Where (a path of keys and indexes) the first unfaithful value of a parsed JSON
    body is, and what is wrong with it."""
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, (str, float)):
            problem = _problem(value)
            if problem is not None:
                return path, problem
        elif isinstance(value, dict):
            for key in reversed(value):  # reversed: popped in document order
                if found := _unstorable(key):
                    return (*path, key), f"the name has {found}; send valid UTF-8 text without it"
                stack.append(((*path, key), value[key]))
        elif isinstance(value, list):
            stack.extend(((*path, i), value[i]) for i in reversed(range(len(value))))
    return None


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this type as JSON."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _credentials_first(request: Request) -> None:
    """Authenticate the caller of a route that is not public: FastAPI reads a body before
    it runs the dependencies, so a bad body would otherwise be a 400 to a caller without
    credentials, and on the audit record as anonymous."""
    if permission_for(request.method, route_template(request.scope)) is not Permission.PUBLIC:
        await authenticate(request)


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """A route whose JSON body is read by ``loads`` and checked before validation."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle

        async def handler(request: Request) -> Response:
            request = JsonRequest(request.scope, request.receive)
            if _is_json(request.headers.get("content-type")) and await request.body():
                found: tuple[tuple[int | str, ...], str] | None = None
                try:
                    found = _first_problem(await request.json())
                except Exception:  # FastAPI reads it again, and says why
                    await _credentials_first(request)
                if found is not None:
                    await _credentials_first(request)
                    path, problem = found
                    raise RequestValidationError(
                        [{"type": "value_error", "loc": ("body", *path), "msg": problem}]
                    )
            return await handle(request)

        return handler

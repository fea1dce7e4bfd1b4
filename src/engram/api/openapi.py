"""The OpenAPI document as the app really answers: FastAPI's, plus the security schemes
and, on every operation, the error responses it can give (in the ``Error`` shape of
errors.py, with 400 where FastAPI would document 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from engram.auth.principal import Permission
from engram.auth.routes import permission_for
from engram.config import LimitSettings

__all__ = ["Error", "install_openapi", "returns"]

_REF = {"$ref": "#/components/schemas/Error"}
_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
_ERRORS = {
    404: "Not found (or another tenant's)",
    409: "Conflicts with what exists (a duplicate id, a state that does not allow it)",
}


class Error(BaseModel):
    """Every error: what was wrong, what to do, the offending field, why it was refused."""

    message: str
    hint: str | None = None
    field: str | None = None
    reason: str | None = None


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _REF}}}


# The searches whose `limit` and `text` the server's limits bound (api.validation).
_SEARCHES = (("/api/v2/sessions/search", "post"), ("/v1/search", "post"),
             ("/v1/facts/search", "post"))  # fmt: skip


def _search_bounds(doc: dict[str, Any], limits: LimitSettings) -> None:
    """Document the configured maxima of the searches' `limit` and `text`."""
    schemas = doc.get("components", {}).get("schemas", {})
    for path, method in _SEARCHES:
        op = doc.get("paths", {}).get(path, {}).get(method)
        if op is None:
            continue
        fields = [p["schema"] for p in op.get("parameters", []) if p.get("name") == "limit"]
        ref = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        body = schemas.get(ref.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1], {})
        props = body.get("properties", {})
        fields += [props["limit"]] if "limit" in props else []
        for f in fields:
            f["maximum"] = limits.max_search_results
        if "text" in props:
            props["text"]["maxLength"] = min(
                props["text"].get("maxLength", limits.max_search_text_chars),
                limits.max_search_text_chars,
            )


def _document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = Error.model_json_schema()
    # Unused once 422 is gone: bad requests are 400 with an Error.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = {
        "ApiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>` (what the Zep SDKs send)",
        },
        "Bearer": {"type": "http", "scheme": "bearer", "description": "an API key or OIDC JWT"},
    }
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            responses: dict[str, Any] = op.setdefault("responses", {})
            responses.pop("422", None)
            params = op.get("parameters", [])
            if params or "requestBody" in op:
                responses.setdefault("400", _error("Bad request: names the field and the fix"))
            if "requestBody" in op:
                responses.setdefault("413", _error("The body is past limits.max_body_bytes"))
            if any(p.get("in") == "path" for p in params):
                responses.setdefault("404", _error(_ERRORS[404]))
            if permission_for(method.upper(), path) is Permission.PUBLIC:
                continue
            op["security"] = _SECURITY
            responses.setdefault("401", _error("No valid credentials"))
            responses.setdefault("403", _error("The credentials lack the route's permission"))
            responses.setdefault(
                "429", _error("Over the key's or tenant's limits: retry after Retry-After s")
            )
            responses.setdefault(
                "503",
                _error("The database or a key provider is unreachable, or the server is"
                       " overloaded (then with Retry-After)"),
            )  # fmt: skip
    _search_bounds(doc, app.state.runtime.settings.limits)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve ``_document`` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def returns(
    model: type[BaseModel] | Any, status: int = 200, errors: tuple[int, ...] = ()
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that renders its rows itself: documents ``model`` as its
    success body without FastAPI validating (and re-serialising) every response, and
    ``errors`` beyond those every operation gets (see ``_document``)."""
    out: dict[int | str, dict[str, Any]] = {status: {"model": model}}
    for code in errors:
        out[code] = {"model": Error, "description": _ERRORS[code]}
    return out

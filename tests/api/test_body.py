"""Every API route that takes a JSON body reads it with engram.api.body (numbers and
text checked before validation): a new router without ``route_class=JsonRoute`` would
silently read 1e-400 as 0 and pass lone surrogates on to a 500."""

from __future__ import annotations

import importlib
import pkgutil
import secrets

import pytest
from fastapi.routing import APIRoute

import engram.api.v1
import engram.api.zep
from engram.api.body import JsonRoute
from tests.fix_app import App

ROUTERS = [
    f"{package.__name__}.{m.name}"
    for package in (engram.api.zep, engram.api.v1)
    for m in pkgutil.iter_modules(package.__path__)
]


@pytest.mark.parametrize("module", ROUTERS)
def test_routes_with_a_body_read_it_faithfully(module: str) -> None:
    router = getattr(importlib.import_module(module), "router", None)
    routes = [r for r in getattr(router, "routes", []) if isinstance(r, APIRoute)]
    for route in routes:
        if route.body_field is not None:
            assert isinstance(route, JsonRoute), f"{module}: {route.path}"


BAD_BODIES = [
    b'{"user_id": "x", "metadata": {"a": "\\ud800"}}',  # a lone surrogate
    b'{"user_id": "x", "metadata": {"n": 1e-400}}',  # no 64-bit float
    b'{"user_id": ',  # not JSON
]


@pytest.mark.integration
@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_bad_body_is_judged_after_the_credentials(app: App, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    with app.client(anonymous=True) as anonymous:
        r = anonymous.post("/api/v2/users", content=body, headers=headers)
        assert r.status_code == 401, r.text  # no hint about the body to a stranger
        r = anonymous.post(
            "/v1/search", content=body, headers={**headers, "Authorization": "Api-Key nope"}
        )
        assert r.status_code == 401, r.text
    with app.client() as admin:
        request_id = f"bad-body-{secrets.token_hex(4)}"
        r = admin.post(
            "/api/v2/users", content=body, headers={**headers, "X-Request-Id": request_id}
        )
        assert r.status_code == 400, r.text
    # The 400 is on the record as the key's, not as an anonymous request's.
    with app.superuser() as conn:
        row = conn.execute(
            "SELECT actor, status FROM audit_log WHERE request_id = %s", (request_id,)
        ).fetchone()
    assert row == ("bootstrap-key", 400)

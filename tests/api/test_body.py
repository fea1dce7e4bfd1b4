"""Every API route that takes a JSON body reads it with engram.api.body (numbers and
text checked before validation): a new router without ``route_class=JsonRoute`` would
silently read 1e-400 as 0 and pass lone surrogates on to a 500."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from fastapi.routing import APIRoute

import engram.api.v1
import engram.api.zep
from engram.api.body import JsonRoute

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

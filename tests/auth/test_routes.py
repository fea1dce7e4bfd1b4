"""Deny by default: every route of the app declares a permission in the matrix, every
non-public route runs the auth dependency, and docs/ shows the matrix as the code has it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Route

from engram.api import create_app
from engram.api.deps import _authenticate
from engram.api.routes_doc import generated_blocks, update
from engram.auth.principal import Permission, Principal, Role, permissions_for
from engram.auth.routes import ROUTE_PERMISSIONS, permission_for
from engram.config import load_settings
from engram.runtime import Runtime

DOCS = Path(__file__).parents[2] / "docs"


def _walk(routes: list[Any], inherited: tuple[Any, ...] = ()) -> Iterator[tuple[str, Any, bool]]:
    """(full path, route, authenticated by an enclosing router) for every route, into
    FastAPI's included routers."""
    for r in routes:
        if hasattr(r, "effective_candidates"):  # an included router
            deps = inherited + tuple(d.dependency for d in r.include_context.dependencies)
            yield from _walk(r.effective_candidates(), deps)
        elif hasattr(r, "original_route"):
            yield r.path, r.original_route, _authenticate in inherited
        else:
            yield r.path, r, _authenticate in inherited


def _depends_on(dependant: object, call: object) -> bool:
    deps = getattr(dependant, "dependencies", [])
    return any(d.call is call or _depends_on(d, call) for d in deps)


def test_every_route_declares_a_permission(tmp_path: Path) -> None:
    app = create_app(Runtime(load_settings(data_dir=tmp_path)))
    seen = set()
    routes = list(_walk(app.routes))
    assert len(routes) > 30
    for path, route, by_router in routes:
        assert isinstance(route, Route), path
        for method in sorted((route.methods or set()) - {"HEAD"}):
            seen.add((method, path))
            perm = permission_for(method, path)
            assert perm is not None, f"{method} {path} declares no permission"
            if perm is not Permission.PUBLIC:
                assert isinstance(route, APIRoute), path
                assert by_router or _depends_on(route.dependant, _authenticate), (
                    f"{method} {path} does not authenticate"
                )
    assert set(ROUTE_PERMISSIONS) == seen, "the matrix names routes the app does not have"


def test_an_undeclared_route_is_denied() -> None:
    assert permission_for("GET", "/api/v2/not-declared") is None
    assert permission_for("PUT", "/api/v2/users/{user_id}") is None


def test_the_docs_show_every_route_and_role_as_the_code_has_them(tmp_path: Path) -> None:
    app = create_app(Runtime(load_settings(data_dir=tmp_path)))
    blocks = generated_blocks(app)
    for (method, path), perm in ROUTE_PERMISSIONS.items():
        assert f"| {method} | `{path}` | {perm.value} |" in blocks["routes"], (method, path)
    for page, name in (("api.md", "routes"), ("security.md", "roles")):
        text = (DOCS / page).read_text()
        assert f"<!-- BEGIN GENERATED: {name} " in text, f"docs/{page} lost its {name} table"
        assert update(text, blocks) == text, (
            f"docs/{page}: the {name} table differs from the code; run `make docs` "
            "(python -m engram.api.routes_doc docs/api.md docs/security.md) and commit it"
        )


def test_roles() -> None:
    def principal(role: Role, **kw: bool) -> Principal:
        return Principal("t", "a", role, "api-key", permissions_for(role, **kw))

    reader, writer = principal(Role.READER), principal(Role.WRITER)
    admin, auditor = principal(Role.ADMIN), principal(Role.AUDITOR)
    assert reader.can(Permission.MEMORY_READ) and not reader.can(Permission.MEMORY_WRITE)
    assert writer.can(Permission.MEMORY_WRITE) and not writer.can(Permission.KEYS_MANAGE)
    assert auditor.can(Permission.AUDIT_READ) and not auditor.can(Permission.MEMORY_READ)
    assert admin.can(Permission.KEYS_MANAGE) and not admin.can(Permission.TENANTS_MANAGE)
    assert principal(Role.ADMIN, platform=True).can(Permission.TENANTS_MANAGE)
    assert not admin.can_read_protected
    assert principal(Role.READER, read_protected=True).can_read_protected

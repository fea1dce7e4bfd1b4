"""The permission tables of docs/, rendered from the code: every route of the app with the
permission auth.routes gives it, and what each role holds.

``python -m engram.api.routes_doc FILE...`` (``make docs``) rewrites the generated blocks
of the files it is given; ``--check`` only says which are stale (exit 1).
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from engram.auth.principal import Permission, Role, permissions_for
from engram.auth.routes import permission_for

__all__ = ["app_routes", "generated_blocks", "main", "render_roles", "render_routes", "update"]

_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z]+)[^>]*-->\n)"
    r"(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)
# Route permissions a role can hold (public and authenticated need no role).
_ROLE_COLUMNS = [p for p in Permission if p not in (Permission.PUBLIC, Permission.AUTHENTICATED)]


def _walk(routes: Sequence[Any]) -> Iterator[tuple[str, Any]]:
    """(full path, route) of every route, into the routers FastAPI includes lazily."""
    for r in routes:
        if hasattr(r, "effective_candidates"):
            yield from _walk(r.effective_candidates())
        else:
            yield r.path, getattr(r, "original_route", r)


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, in the app's order, HEAD left out."""
    found: list[tuple[str, str]] = []
    for path, route in _walk(app.routes):
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            if (method, path) not in found:
                found.append((method, path))
    return found


def render_routes(routes: Sequence[tuple[str, str]]) -> str:
    """The route table: method, path and the permission each demands."""
    lines = ["| method | route | permission |", "|---|---|---|"]
    for method, path in routes:
        perm = permission_for(method, path)
        shown = perm.value if perm is not None else "**undeclared: refused with 403**"
        lines.append(f"| {method} | `{path}` | {shown} |")
    return "\n".join(lines) + "\n"


def render_roles() -> str:
    """The role matrix: which permission each role holds, in its own tenant."""
    lines = ["| role | " + " | ".join(p.value for p in _ROLE_COLUMNS) + " |"]
    lines.append("|---" * (len(_ROLE_COLUMNS) + 1) + "|")
    for role in Role:
        held, platform = permissions_for(role), permissions_for(role, platform=True)
        cells = [
            "yes" if p in held else "in the default tenant only" if p in platform else ""
            for p in _ROLE_COLUMNS
        ]
        cells[_ROLE_COLUMNS.index(Permission.READ_PROTECTED)] = "when granted"
        lines.append(f"| {role.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def generated_blocks(app: FastAPI | None = None) -> dict[str, str]:
    """The body of every generated block, by name."""
    if app is None:
        from engram.api.app import create_app
        from engram.config import load_settings
        from engram.runtime import Runtime

        with tempfile.TemporaryDirectory() as tmp:  # building the app opens nothing
            app = create_app(Runtime(load_settings(data_dir=Path(tmp))))
    return {"routes": render_routes(app_routes(app)), "roles": render_roles()}


def update(text: str, blocks: dict[str, str]) -> str:
    """``text`` with the body of each generated block it holds replaced by ``blocks``'."""

    def body(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in blocks:
            raise KeyError(f"unknown generated block {name!r}")
        return m.group(1) + blocks[name] + m.group(4)

    return _BLOCK.sub(body, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the generated blocks of the given files."""
    logging.basicConfig(level=logging.ERROR)  # building the app notes its temporary files
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    files = [Path(a) for a in args if a != "--check"]
    blocks = generated_blocks()
    stale = []
    for path in files:
        text = path.read_text()
        new = update(text, blocks)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new)
    for path in stale:
        sys.stderr.write(f"{path}: {'stale (run make docs)' if check else 'regenerated'}\n")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())

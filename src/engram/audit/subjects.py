"""Users and sessions in audit records: named by pseudonym, resolved while they exist."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from engram.store import audit as store
from engram.store.db import Conn

__all__ = ["attach_subjects", "pseudonymize"]

_SEGMENT = re.compile(r"[^/]+")
_PSEUDONYM = re.compile(r"\b(?:user|session):[0-9a-f]{20}\b")


_SEGMENT = re.compile(r"[^/]+")


async def pseudonymize(conn: Conn, resource: str, subjects: Sequence[tuple[str, str]]) -> str:
    """``resource`` with each path segment that is a subject's id replaced by the
    subject's pseudonym (users before sessions when one id is both)."""
    names = await store.pseudonyms(conn, subjects)
    by_id: dict[str, str] = {}
    for (_kind, subject_id), name in sorted(names.items(), key=lambda kv: kv[0][0] != "user"):
        by_id.setdefault(subject_id, name)
    return _SEGMENT.sub(lambda m: by_id.get(m.group(0), m.group(0)), resource)


async def attach_subjects(conn: Conn, rows: list[dict[str, Any]]) -> None:
    """Add to each record a ``subjects`` object: its pseudonyms that still map to a user
    or session, with their ids (erased ones map to nothing)."""
    found = [{m.group(0) for m in _PSEUDONYM.finditer(r["resource"])} for r in rows]
    names = set().union(*found)
    known = await store.resolve(conn, names) if names else {}
    for row, mine in zip(rows, found, strict=True):
        row["subjects"] = {name: known[name] for name in sorted(mine) if name in known}

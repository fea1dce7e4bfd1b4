"""Fact upsert for one episode, set-based: deduplicate, close what exclusive relations
replace, insert the rest, in a fixed number of statements.

The facts are decided in order, as one lookup per fact would decide them: a valid fact
of the same subject saying the same thing (same edge, or near-identical text) gets the
new provenance; otherwise an exclusive relation closes the subject's other valid objects
and the fact is inserted. The database is asked once for every stored fact that could
matter to any of them; the facts of the episode itself are tracked here.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from engram.store import facts
from engram.store.db import Conn

__all__ = ["FactWrites", "Planned", "upsert"]

_VEC = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True, slots=True)
class Planned:
    """One extracted fact with its resolved entities, vector and sealed text."""

    uuid: uuidlib.UUID
    source: uuidlib.UUID
    target: uuidlib.UUID
    relation: str
    text: str
    exclusive: bool
    vector: _VEC
    valid_at: datetime | None
    invalid_at: datetime | None
    message: uuidlib.UUID
    sensitivity: int
    ciphertext: bytes | None
    # Whether its vector says what it says: not when made from a class marker alone (a
    # fact of a message declared phi is embedded as "[PHI]", like all the others), and
    # then only the same edge is the same fact.
    by_text: bool = True


@dataclass(slots=True)
class _Valid:
    """A fact valid at this point of the episode, stored or new."""

    uuid: uuidlib.UUID
    source: uuidlib.UUID
    relation: str
    target: uuidlib.UUID
    valid_at: datetime | None
    new: bool
    index: int = -1  # position among the episode's facts, for new ones


@dataclass(frozen=True)
class FactWrites:
    provenance: list[tuple[uuidlib.UUID, uuidlib.UUID]]
    closed: list[tuple[uuidlib.UUID, datetime | None]]
    inserted: list[facts.NewFact]

    async def write(self, conn: Conn, tenant: str, user_id: str, ts_config: str) -> None:
        """Add provenance, close replaced facts, insert the new ones (pipelined)."""
        await facts.add_provenance_many(conn, self.provenance)
        await facts.close_many(conn, self.closed)
        await facts.insert_many(conn, tenant, user_id, self.inserted, ts_config)


async def upsert(conn: Conn, planned: list[Planned], threshold: float) -> FactWrites:
    """Decide which of the episode's facts are known (provenance), which stored facts
    they close, and which are new."""
    if not planned:
        return FactWrites([], [], [])
    related = await facts.same_or_related(
        conn, [(p.source, p.relation, p.vector) for p in planned], threshold
    )
    stored: dict[uuidlib.UUID, _Valid] = {}
    compared: list[list[uuidlib.UUID]] = []  # per fact, the stored facts it was compared with
    distance: dict[tuple[int, uuidlib.UUID], float] = {}
    for i, rows in enumerate(related):
        compared.append([])
        for r in rows:
            uuid = uuidlib.UUID(str(r["uuid"]))
            stored.setdefault(
                uuid,
                _Valid(
                    uuid, planned[i].source, r["relation"], r["target_uuid"], r["valid_at"], False
                ),
            )
            compared[i].append(uuid)
            distance[(i, uuid)] = float(r["distance"])
    vectors = np.stack([p.vector for p in planned]).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similar: list[list[float]] = (vectors @ vectors.T).tolist()  # between the new facts
    closed: dict[uuidlib.UUID, datetime | None] = {}  # stored facts this episode closes
    new: list[_Valid] = []  # facts this episode inserts that are still valid
    expired: dict[uuidlib.UUID, datetime | None] = {}  # ... and those a later one closed
    episodes: dict[uuidlib.UUID, list[uuidlib.UUID]] = {}
    invalid_ats: dict[uuidlib.UUID, datetime | None] = {}
    provenance: dict[tuple[uuidlib.UUID, uuidlib.UUID], None] = {}

    def dist(i: int, f: _Valid) -> float:
        if f.new:
            return 1 - similar[i][f.index]
        return distance[(i, f.uuid)]

    for i, p in enumerate(planned):
        pool = [stored[u] for u in compared[i] if u not in closed]
        pool += [f for f in new if f.source == p.source and f.uuid not in expired]
        same = _same(i, p, pool, dist, threshold)
        if same is not None:
            if not same.new:
                provenance[(same.uuid, p.message)] = None
            elif p.message not in episodes[same.uuid]:
                episodes[same.uuid].append(p.message)
            continue
        invalid_at = p.invalid_at
        if p.exclusive:
            for old in pool:
                if old.relation != p.relation or old.target == p.target:
                    continue
                if (
                    p.valid_at is not None
                    and old.valid_at is not None
                    and old.valid_at > p.valid_at
                ):
                    # The new statement is about an earlier time: it held until the old one.
                    invalid_at = min(invalid_at or old.valid_at, old.valid_at)
                elif old.new:
                    expired[old.uuid] = p.valid_at
                else:
                    closed[old.uuid] = p.valid_at
        episodes[p.uuid] = [p.message]
        invalid_ats[p.uuid] = invalid_at
        if invalid_at is None:  # only a fact still valid can be matched or closed later
            new.append(_Valid(p.uuid, p.source, p.relation, p.target, p.valid_at, True, i))
    inserted = [
        facts.NewFact(
            p.uuid, p.source, p.target, p.relation, p.text, p.exclusive, p.vector, p.valid_at,
            expired[p.uuid] if p.uuid in expired else invalid_ats[p.uuid], p.uuid in expired,
            episodes[p.uuid], p.sensitivity, p.ciphertext,
        )
        for p in planned
        if p.uuid in episodes
    ]  # fmt: skip
    return FactWrites(list(provenance), list(closed.items()), inserted)


def _same(i: int, p: Planned, pool: list[_Valid], dist: Any, threshold: float) -> _Valid | None:
    """find_same: the same edge first, else the nearest text at least ``threshold`` alike."""
    best: tuple[bool, float] | None = None
    found: _Valid | None = None
    for f in pool:
        d = dist(i, f)
        exact = f.relation == p.relation and f.target == p.target
        if not exact and (1 - d < threshold or not p.by_text):
            continue
        rank = (not exact, d)
        if best is None or rank < best:
            best, found = rank, f
    return found

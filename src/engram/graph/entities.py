"""Entity resolution for one episode, set-based: a few queries whatever its size.

Names are resolved in order, exactly as one lookup per name would: the normalised name
(then an alias), then the nearest name embedding above the threshold, and otherwise a
new entity. What earlier names of the episode created (new entities, new aliases) is
tracked here, so the database is asked once per kind of lookup, not once per name.
"""

from __future__ import annotations

import re
import unicodedata
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.store import entities
from engram.store.db import Conn

__all__ = ["Mention", "Resolution", "normalize_name", "resolve"]

_VEC = np.ndarray[Any, np.dtype[np.float32]]


def normalize_name(name: str) -> str:
    """Case-, accent- and punctuation-insensitive key of an entity name."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^\w\s]", " ", text.casefold())
    text = re.sub(r"^(the|a|an)\s+", "", text.strip())
    return " ".join(text.split())


def key_of(name: str) -> str:
    return normalize_name(name) or name.casefold()


@dataclass(frozen=True, slots=True)
class Mention:
    """A name the episode's facts use: its label, summary and first message."""

    name: str
    label: str
    message: uuidlib.UUID
    node: uuidlib.UUID  # the uuid it gets if it is new (a sealed summary is bound to it)
    summary: tuple[str, bytes | None] | None = None  # (stored text, ciphertext)


@dataclass(slots=True)
class _Known:
    """An entity as this episode has seen it: stored columns plus its changes so far."""

    uuid: uuidlib.UUID
    normalized: str
    labels: list[str]
    aliases: list[str]
    vector: _VEC | None = None  # set for entities created by this episode
    new: bool = False


@dataclass
class _Plan:
    known: dict[uuidlib.UUID, _Known] = field(default_factory=dict)
    by_key: dict[str, uuidlib.UUID] = field(default_factory=dict)  # created this episode
    by_alias: dict[str, uuidlib.UUID] = field(default_factory=dict)  # aliased this episode
    created: list[entities.NewEntity] = field(default_factory=list)
    changes: list[tuple[uuidlib.UUID, str | None, str]] = field(default_factory=list)
    mentions: dict[tuple[uuidlib.UUID, uuidlib.UUID], None] = field(default_factory=dict)

    def see(self, row: dict[str, Any]) -> _Known:
        uuid = uuidlib.UUID(str(row["uuid"]))
        if uuid not in self.known:
            self.known[uuid] = _Known(
                uuid, row["normalized_name"], list(row["labels"]), list(row["aliases"])
            )
        return self.known[uuid]

    def reuse(self, entity: _Known, key: str, label: str, message: uuidlib.UUID) -> None:
        """entities.add_episode, planned: a mention, and a new alias or label."""
        self.mentions[(entity.uuid, message)] = None
        alias_known = key in entity.aliases or entity.normalized == key
        if label in entity.labels and alias_known:
            return
        if not alias_known:
            entity.aliases.append(key)
            self.by_alias.setdefault(key, entity.uuid)
        if label not in entity.labels:
            entity.labels.append(label)
        self.changes.append((entity.uuid, key, label))


async def resolve(
    conn: Conn,
    user_id: str,
    mentions: list[Mention],
    embed: Callable[[list[str]], Awaitable[list[_VEC]]],
    threshold: float,
) -> Resolution:
    """The user's entity for each mentioned name, the missing ones to be created.

    ``embed`` computes the vectors of the names that no stored name or alias matches
    (the only ones whose embedding is needed)."""
    keys = {m.name: key_of(m.name) for m in mentions}
    stored = await entities.find_by_names(conn, user_id, sorted(set(keys.values())))
    unmatched = list(dict.fromkeys(m.name for m in mentions if keys[m.name] not in stored))
    vectors = dict(zip(unmatched, await embed(unmatched), strict=True))
    nearest = dict(
        zip(
            unmatched,
            await entities.nearest_many(conn, user_id, [vectors[n] for n in unmatched]),
            strict=True,
        )
    )
    plan = _Plan()
    ids: dict[str, uuidlib.UUID] = {}
    for m in mentions:
        key = keys[m.name]
        entity = _by_name(plan, stored.get(key), key)
        if entity is None:
            entity = _by_embedding(plan, nearest[m.name], vectors[m.name], threshold)
        if entity is not None:
            plan.reuse(entity, key, m.label, m.message)
            ids[m.name] = entity.uuid
            continue
        node = m.node
        text, ciphertext = m.summary if m.summary else (None, None)
        plan.created.append(
            entities.NewEntity(node, m.name, key, m.label, text, ciphertext, vectors[m.name])
        )
        plan.known[node] = _Known(node, key, [m.label], [], vectors[m.name], new=True)
        plan.by_key[key] = node
        plan.mentions[(node, m.message)] = None
        ids[m.name] = node
    return Resolution(ids, plan)


@dataclass(frozen=True)
class Resolution:
    """The entity of each name, and the writes that make it so."""

    ids: dict[str, uuidlib.UUID]
    _plan: _Plan

    async def write(self, conn: Conn, tenant: str, user_id: str) -> None:
        """Insert the new entities, their mentions, new aliases and labels (pipelined: no
        statement waits for the previous one's result)."""
        await entities.insert_many(conn, tenant, user_id, self._plan.created)
        await entities.mention_many(conn, tenant, list(self._plan.mentions))
        await entities.add_episodes(conn, self._plan.changes)


def _by_name(plan: _Plan, row: dict[str, Any] | None, key: str) -> _Known | None:
    """find_by_name over the stored rows and this episode's changes: a normalised name
    before an alias."""
    if row is not None and row["normalized_name"] == key:
        return plan.see(row)
    if key in plan.by_key:
        return plan.known[plan.by_key[key]]
    if row is not None:
        return plan.see(row)
    if key in plan.by_alias:
        return plan.known[plan.by_alias[key]]
    return None


def _by_embedding(
    plan: _Plan, row: dict[str, Any] | None, vector: _VEC, threshold: float
) -> _Known | None:
    """The nearest name, stored or created by this episode, if close enough."""
    best: _Known | None = None
    score = -2.0
    if row is not None:
        best, score = plan.see(row), float(row["score"])
    for entity in plan.known.values():
        if entity.new and entity.vector is not None:
            s = _cosine(vector, entity.vector)
            if s > score:
                best, score = entity, s
    return best if best is not None and score >= threshold else None


def _cosine(a: _VEC, b: _VEC) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))

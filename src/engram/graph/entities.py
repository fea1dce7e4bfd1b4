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

__all__ = ["Mention", "Resolution", "is_marker", "normalize_name", "resolve", "sealed_key"]

_VEC = np.ndarray[Any, np.dtype[np.float32]]


# The name of an entity made from a protected value (see graph.ingest._Sealer.name).
_MARKER = re.compile(r"\[[A-Z_]+\]")


def is_marker(text: str) -> bool:
    """Whether `text` is a marker alone, such as ``[PHI]``."""
    return _MARKER.fullmatch(text.strip()) is not None


def normalize_name(name: str) -> str:
    """Case-, accent- and punctuation-insensitive key of an entity name. A marker such as
    ``[PHONE]`` keeps its brackets: it is not the entity "phone"."""
    if _MARKER.fullmatch(name):
        return name.casefold()
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^\w\s]", " ", text.casefold())
    text = re.sub(r"^(the|a|an)\s+", "", text.strip())
    return " ".join(text.split())


def key_of(name: str) -> str:
    return normalize_name(name) or name.casefold()


def sealed_key(name: str) -> str:
    """The key a sealed name is resolved by, in memory only: never equal to a name's in
    clear (a sealed name matches only sealed names)."""
    return "\x00" + key_of(name)


@dataclass(frozen=True, slots=True)
class Mention:
    """A name the episode's facts use: its label, summary and first message.

    A sealed name (taken from a message that declares a protected class) is stored as
    `name`, the class marker, with `name_enc`; it is resolved by its plaintext's key
    against the user's sealed names only, never by embedding, and gets no alias."""

    name: str
    label: str
    message: uuidlib.UUID
    node: uuidlib.UUID  # the uuid it gets if it is new (a sealed summary is bound to it)
    summary: tuple[str, bytes | None] | None = None  # (stored text, ciphertext)
    name_enc: bytes | None = None
    _key: str | None = None  # a sealed name's key (else the key of `name`)

    @classmethod
    def of_sealed(
        cls, marker: str, plaintext: str, ciphertext: bytes, label: str,
        message: uuidlib.UUID, node: uuidlib.UUID, summary: tuple[str, bytes | None] | None,
    ) -> Mention:  # fmt: skip
        return cls(marker, label, message, node, summary, ciphertext, sealed_key(plaintext))

    @property
    def sealed(self) -> bool:
        return self.name_enc is not None

    @property
    def key(self) -> str:
        return self._key if self._key is not None else key_of(self.name)


@dataclass(slots=True)
class _Known:
    """An entity as this episode has seen it: stored columns plus its changes so far."""

    uuid: uuidlib.UUID
    normalized: str
    labels: list[str]
    aliases: list[str]
    new: bool = False
    sealed: bool = False  # its name is sealed: no alias is ever added (it would be clear)


@dataclass
class _Plan:
    known: dict[uuidlib.UUID, _Known] = field(default_factory=dict)
    by_key: dict[str, uuidlib.UUID] = field(default_factory=dict)  # created this episode
    by_alias: dict[str, uuidlib.UUID] = field(default_factory=dict)  # aliased this episode
    created: list[entities.NewEntity] = field(default_factory=list)
    changes: list[tuple[uuidlib.UUID, str | None, str]] = field(default_factory=list)
    mentions: dict[tuple[uuidlib.UUID, uuidlib.UUID], None] = field(default_factory=dict)
    vectors: _Vectors = field(default_factory=lambda: _Vectors())

    def see(self, row: dict[str, Any], sealed: bool = False) -> _Known:
        uuid = uuidlib.UUID(str(row["uuid"]))
        if uuid not in self.known:
            self.known[uuid] = _Known(
                uuid, row["normalized_name"], list(row["labels"]), list(row["aliases"]),
                sealed=sealed,
            )  # fmt: skip
        return self.known[uuid]

    def reuse(self, entity: _Known, key: str, label: str, message: uuidlib.UUID) -> None:
        """entities.add_episode, planned: a mention, and a new alias or label."""
        self.mentions[(entity.uuid, message)] = None
        alias_known = entity.sealed or key in entity.aliases or entity.normalized == key
        if label in entity.labels and alias_known:
            return
        if not alias_known:
            entity.aliases.append(key)
            self.by_alias.setdefault(key, entity.uuid)
        if label not in entity.labels:
            entity.labels.append(label)
        self.changes.append((entity.uuid, None if entity.sealed else key, label))


async def resolve(
    conn: Conn,
    user_id: str,
    mentions: list[Mention],
    embed: Callable[[list[str]], Awaitable[list[_VEC]]],
    threshold: float,
    sealed: dict[str, dict[str, Any]] | None = None,
) -> Resolution:
    """The user's entity for each mentioned name's key, the missing ones to be created.

    ``embed`` computes the vectors of the names that no stored name or alias matches
    (the only ones whose embedding is needed); ``sealed`` holds the user's entities with
    sealed names, by the sealed key of their opened names."""
    sealed = sealed or {}
    clear = {m.key for m in mentions if not m.sealed}
    stored = await entities.find_by_names(conn, user_id, sorted(clear))
    stored.update((k, {**r, "normalized_name": k}) for k, r in sealed.items())
    unmatched = list(dict.fromkeys(m.name for m in mentions if m.key not in stored))
    vectors = dict(zip(unmatched, await embed(unmatched), strict=True))
    near = list(dict.fromkeys(m.name for m in mentions if m.key not in stored and not m.sealed))
    nearest = dict(
        zip(
            near,
            await entities.nearest_many(conn, user_id, [vectors[n] for n in near]),
            strict=True,
        )
    )
    plan = _Plan()
    ids: dict[str, uuidlib.UUID] = {}
    for m in mentions:
        key = m.key
        entity = _by_name(plan, stored.get(key), key, m.sealed)
        if entity is None and not m.sealed:
            entity = _by_embedding(plan, nearest[m.name], vectors[m.name], threshold)
        if entity is not None:
            plan.reuse(entity, key, m.label, m.message)
            ids[key] = entity.uuid
            continue
        node = m.node
        text, ciphertext = m.summary if m.summary else (None, None)
        # A sealed name's stored key is its own: its marker and uuid.
        stored_key = f"{key_of(m.name)} {node}" if m.sealed else key
        plan.created.append(
            entities.NewEntity(
                node, m.name, stored_key, m.label, text, ciphertext, vectors[m.name], m.name_enc
            )
        )
        plan.known[node] = _Known(node, key, [m.label], [], new=True, sealed=m.sealed)
        if not m.sealed:
            plan.vectors.add(node, vectors[m.name])
        plan.by_key[key] = node
        plan.mentions[(node, m.message)] = None
        ids[key] = node
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


def _by_name(
    plan: _Plan, row: dict[str, Any] | None, key: str, sealed: bool = False
) -> _Known | None:
    """find_by_name over the stored rows and this episode's changes: a normalised name
    before an alias."""
    if row is not None and row["normalized_name"] == key:
        return plan.see(row, sealed)
    if key in plan.by_key:
        return plan.known[plan.by_key[key]]
    if row is not None:
        return plan.see(row, sealed)
    if key in plan.by_alias:
        return plan.known[plan.by_alias[key]]
    return None


def _by_embedding(
    plan: _Plan, row: dict[str, Any] | None, vector: _VEC, threshold: float
) -> _Known | None:
    """The nearest name, stored or created by this episode, if close enough (a stored
    one on a tie, else the first created)."""
    best: _Known | None = None
    score = -2.0
    if row is not None:
        best, score = plan.see(row), float(row["score"])
    created = plan.vectors.rows()
    if len(created):
        scores = created @ _unit(vector)
        i = int(np.argmax(scores))
        if float(scores[i]) > score:
            best, score = plan.known[plan.vectors.ids[i]], float(scores[i])
    return best if best is not None and score >= threshold else None


def _unit(v: _VEC) -> np.ndarray[Any, np.dtype[np.float64]]:
    v64 = v.astype(np.float64)
    return v64 / max(float(np.linalg.norm(v64)), 1e-300)


@dataclass
class _Vectors:
    """Unit name vectors of the entities created so far, as one growing matrix."""

    ids: list[uuidlib.UUID] = field(default_factory=list)
    _rows: np.ndarray[Any, np.dtype[np.float64]] | None = None

    def add(self, uuid: uuidlib.UUID, vector: _VEC) -> None:
        n = len(self.ids)
        if self._rows is None or n == len(self._rows):
            grown = np.empty((max(16, 2 * n), len(vector)), dtype=np.float64)
            if self._rows is not None:
                grown[:n] = self._rows
            self._rows = grown
        self._rows[n] = _unit(vector)
        self.ids.append(uuid)

    def rows(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        if self._rows is None:
            return np.empty((0, 0), dtype=np.float64)
        return self._rows[: len(self.ids)]

"""Text stored in clear, classified again and sealed where its class is protected now.

Message content, fact texts and entity summaries written while `crypto.enabled` was off
are stored in clear with class none (their writer classified nothing), and so is text
whose class was not protected when it was written: a class added to `crypto.protect`
later, or a detector added by an upgrade, finds it only by reading it again. Unlike a
user's, a session's or a message's metadata (marked -1 when not classified, and sealed by
every re-encryption run), such text cannot be told from text classified as none, so
reading it all is a step the operator asks for: `engram keys reclassify`.

Each field in clear is read once and classified as a write would classify it: at least
the class its message or session declares; a fact or a summary at least the highest
class of the messages it came from. Where the class is protected, it is sealed under its
user's data key as a new write would be: the plain column keeps the redacted form, and
the full-text vector and the embedding are made from that (the embedding from the
plaintext with `crypto.embed_plaintext`). A crypto-shredded user's text cannot be sealed:
its redacted form alone is kept, so their protected values go with their key like the
rest of their data. Safe to stop at any point and run again: a sealed field is not read
again, and a row is changed only if it is still in clear.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engram.crypto.envelope import FieldContext
from engram.crypto.protect import KeyRef, Protector, Sealed, sealed_or_redacted
from engram.crypto.sensitivity import Sensitivity, combine, stored_class
from engram.graph.entities import is_marker, normalize_name
from engram.store import clear
from engram.store.keys import KeyPool, SyncConn

__all__ = ["Reclassified", "reclassify"]

logger = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], NDArray[np.float32]]
Row = dict[str, Any]


@dataclass
class Reclassified:
    """What a run did: fields read, sealed, kept only redacted (shredded users'), and
    entity names renamed."""

    read: int = 0
    sealed: int = 0
    redacted: int = 0
    renamed: int = 0
    names_sealed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.read} field(s) in clear read, {self.sealed} sealed, {self.redacted} kept "
            f"redacted only (their user's key is destroyed); {self.renamed} entity name(s) "
            "holding a protected value renamed to its marker; "
            f"{self.names_sealed} entity name(s) taken from text of a declared class sealed"
        )


@dataclass
class _Table:
    """One kind of field: how to scan it, what it declares, how to store it sealed."""

    table: str
    column: str
    scan: Callable[[SyncConn, uuidlib.UUID, int], list[Row]]
    declared: Callable[[Row], Sensitivity]
    store: Callable[[SyncConn, Row, Sealed, Any], None]
    embeds: bool


def _source(row: Row) -> Sensitivity:
    return Sensitivity(max(row.get("sensitivity") or 0, row["source"] or 0))


def _tables(ts_config: str) -> list[_Table]:
    # Messages first: a fact's or summary's class follows their messages' classes.
    return [
        _Table(
            "messages", "content", clear.messages,
            lambda r: combine(stored_class(r["metadata"]), stored_class(r["session_metadata"])),
            lambda conn, r, s, v: clear.seal_text(
                conn, "messages", r["uuid"], s.text, s.ciphertext, int(s.sensitivity), v,
                ts_config,
            ),
            embeds=True,
        ),
        _Table(
            "facts", "fact", clear.facts, _source,
            lambda conn, r, s, v: clear.seal_text(
                conn, "facts", r["uuid"], s.text, s.ciphertext, int(s.sensitivity), v,
                ts_config,
            ),
            embeds=True,
        ),
        _Table(
            "entities", "summary", clear.summaries, _source,
            lambda conn, r, s, v: clear.seal_summary(conn, r["uuid"], s.text, s.ciphertext),
            embeds=False,
        ),
    ]  # fmt: skip


def reclassify(
    pool: KeyPool, protector: Protector, tenant: str, embed: Embed, ts_config: str,
    batch: int = 500,
) -> Reclassified:  # fmt: skip
    """Read every text field of `tenant` stored in clear; seal those now protected."""
    done = Reclassified()
    if not protector.enabled:
        return done
    keys: dict[str | None, KeyRef] = {}

    def seal(t: _Table, row: Row) -> Sealed | None:
        text, user = row[t.column], row["user_id"]
        ctx = FieldContext(tenant, t.table, t.column, str(row["uuid"]))
        key = keys.get(user) or keys.setdefault(user, protector.key_ref(tenant, user))
        sealed, destroyed = sealed_or_redacted(
            protector, lambda p: p.seal_text(ctx, user, text, t.declared(row), key)
        )
        if sealed.text == text:
            return None  # nothing protected in it
        if destroyed:
            done.redacted += 1
        else:
            done.sealed += 1
        return sealed

    for t in _tables(ts_config):
        for conn, rows in _batches(pool, tenant, t.scan, batch):
            done.read += len(rows)
            todo = [(r, s) for r in rows if (s := seal(t, r)) is not None]
            vectors = embed([s.embed_text for _, s in todo]) if t.embeds and todo else None
            for i, (r, s) in enumerate(todo):
                t.store(conn, r, s, vectors[i] if vectors is not None else None)
    _names(pool, protector, tenant, embed, batch, done, keys)
    if done.sealed or done.redacted or done.renamed or done.names_sealed:
        logger.info("tenant %s: %s", tenant, done)
    return done


def _names(
    pool: KeyPool, protector: Protector, tenant: str, embed: Embed, batch: int,
    done: Reclassified, keys: dict[str | None, KeyRef],
) -> None:  # fmt: skip
    """Entity names in clear that only messages of a declared protected class mention
    (stored before a declared class covered names): sealed as a new extraction would
    seal them. Names and aliases that hold a protected value (stored before the
    extractor's names were checked): renamed to the value's marker, or merged into the
    user's entity of that name if there is one."""
    for conn, rows in _batches(pool, tenant, clear.entity_names, batch):
        for r in rows:
            level = _declared(protector, r)
            if level is not None:
                user = r["user_id"]
                key = keys.get(user) or keys.setdefault(user, protector.key_ref(tenant, user))
                sealed = _seal_name(protector, tenant, r, level, key)
                if sealed.text != r["name"]:
                    done.names_sealed += 1
                    normalized = f"{normalize_name(sealed.text)} {r['uuid']}"
                    vector = embed([sealed.text])[0]
                    clear.seal_name(conn, r["uuid"], sealed.text, sealed.ciphertext,
                                    normalized, vector)  # fmt: skip
                    continue
            name = protector.redact_only(r["name"])
            aliases = [a for a in r["aliases"] if protector.redact_only(a) == a]
            if name == r["name"] and aliases == r["aliases"]:
                continue
            done.renamed += 1
            key_ = normalize_name(name)
            into = clear.entity_named(conn, r["user_id"], key_, r["uuid"])
            if into is not None:
                clear.merge_entity(conn, r["uuid"], into, aliases)
            else:
                vector = embed([name])[0]
                clear.rename_entity(conn, r["uuid"], name, key_, aliases, vector)


def _seal_name(
    protector: Protector, tenant: str, row: Row, level: Sensitivity, key: KeyRef
) -> Sealed:
    """An entity's name sealed (or, its user's key destroyed, only its marker)."""
    ctx = FieldContext(tenant, "entities", "name", str(row["uuid"]))
    sealed, _ = sealed_or_redacted(
        protector, lambda p: p.seal_text(ctx, row["user_id"], row["name"], level, key)
    )
    return sealed


def _declared(protector: Protector, row: Row) -> Sensitivity | None:
    """The class an entity's name is sealed under: the highest its messages declare, when
    every one of them declares a protected class and the name is not a speaker's (a role,
    the user's name: not taken from the text); else None."""
    if not row["declared"] or is_marker(row["name"]):
        return None
    c = protector.classifier
    levels = [
        combine(stored_class({"sensitivity": m}), stored_class({"sensitivity": s}), c.floor)
        for m, s in row["declared"]
    ]
    if not all(c.protects(x) for x in levels):
        return None
    people = [*(row["roles"] or ()), row["first_name"], row["last_name"], "user", "assistant"]
    if normalize_name(row["name"]) in {normalize_name(p) for p in people if p}:
        return None
    return max(levels)


def _batches(
    pool: KeyPool, tenant: str, scan: Callable[[SyncConn, uuidlib.UUID, int], list[Row]],
    batch: int,
) -> Iterator[tuple[SyncConn, list[Row]]]:  # fmt: skip
    """Each batch of rows `scan` reads, in uuid order, with the connection of the
    transaction that holds them locked (it commits when the next batch is asked for)."""
    after = uuidlib.UUID(int=0)
    while True:
        with pool.tenant(tenant) as conn:
            rows = scan(conn, after, batch)
            if not rows:
                return
            after = rows[-1]["uuid"]
            yield conn, rows

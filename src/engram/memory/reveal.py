"""Reading protected fields: the plaintext for callers allowed to read it, else the redacted form.

Rows come from the store with their ciphertext columns (`content_enc`, `metadata_enc`,
`fact_enc`, `summary_enc`, `email_enc`, `first_name_enc`, `last_name_enc`); these
functions put the plaintext in the plain columns when the caller may read it, and always
drop the ciphertext columns. Decryption runs off the event loop when a key is not in
memory (that means a call to the key provider), on it when every key is. A value whose
key was shredded stays redacted: that data is gone by design.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from engram.crypto.envelope import FieldContext
from engram.crypto.protect import Protector
from engram.errors import DecryptionError

__all__ = ["entities", "facts", "hits", "messages", "sessions", "users"]

Row = dict[str, Any]
# (ciphertext column, plain column, table, AD column name)
_Field = tuple[str, str, str, str]

_MESSAGE_FIELDS: tuple[_Field, ...] = (
    ("content_enc", "content", "messages", "content"),
    ("metadata_enc", "metadata", "messages", "metadata"),
)
_FACT_FIELDS: tuple[_Field, ...] = (("fact_enc", "fact", "facts", "fact"),)
_ENTITY_FIELDS: tuple[_Field, ...] = (("summary_enc", "summary", "entities", "summary"),)
_USER_FIELDS: tuple[_Field, ...] = (
    ("email_enc", "email", "users", "email"),
    ("first_name_enc", "first_name", "users", "first_name"),
    ("last_name_enc", "last_name", "users", "last_name"),
    ("metadata_enc", "metadata", "users", "metadata"),
)
_SESSION_FIELDS: tuple[_Field, ...] = (("metadata_enc", "metadata", "sessions", "metadata"),)


def _open_all(
    protector: Protector, tenant: str, rows: Sequence[Row], fields: tuple[_Field, ...]
) -> None:
    # The whole page at once: its data keys are read and unwrapped together.
    targets: list[tuple[Row, str]] = []
    sealed: list[tuple[FieldContext, bytes]] = []
    for row in rows:
        row_id = str(row["uuid"])
        for enc, plain, table, column in fields:
            blob = row.get(enc)
            if blob is not None:
                targets.append((row, plain))
                sealed.append((FieldContext(tenant, table, column, row_id), bytes(blob)))
    if not sealed:
        return
    for (row, plain), value in zip(targets, protector.open_many(tenant, sealed), strict=True):
        if not isinstance(value, DecryptionError):
            row[plain] = value
        elif value.reason != "key_destroyed":
            raise value


async def _reveal(
    protector: Protector,
    tenant: str,
    rows: Sequence[Row],
    allowed: bool,
    fields: tuple[_Field, ...],
) -> None:
    if allowed and protector.keyrings is not None:
        blobs = [bytes(b) for row in rows for f in fields if (b := row.get(f[0])) is not None]
        if blobs and protector.cached(tenant, blobs):  # CPU only: cheaper than a thread hop
            _open_all(protector, tenant, rows, fields)
        elif blobs:
            await asyncio.to_thread(_open_all, protector, tenant, rows, fields)
    for row in rows:
        for f in fields:
            row.pop(f[0], None)


async def messages(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal message content and metadata in place."""
    await _reveal(protector, tenant, rows, allowed, _MESSAGE_FIELDS)


async def facts(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal fact text in place."""
    await _reveal(protector, tenant, rows, allowed, _FACT_FIELDS)


async def entities(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal entity summaries in place."""
    await _reveal(protector, tenant, rows, allowed, _ENTITY_FIELDS)


async def users(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal users' e-mail, first and last name and metadata in place."""
    await _reveal(protector, tenant, rows, allowed, _USER_FIELDS)


async def sessions(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal session metadata in place."""
    await _reveal(protector, tenant, rows, allowed, _SESSION_FIELDS)


async def hits(protector: Protector, tenant: str, found: Sequence[Any], allowed: bool) -> None:
    """Reveal the items of search hits (anything with `.kind` and `.item`) in place."""
    by_kind: dict[str, list[Row]] = {"message": [], "fact": [], "entity": []}
    for h in found:
        by_kind[h.kind].append(h.item)
    await messages(protector, tenant, by_kind["message"], allowed)
    await facts(protector, tenant, by_kind["fact"], allowed)
    await entities(protector, tenant, by_kind["entity"], allowed)

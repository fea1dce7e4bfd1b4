"""Reading protected fields: the plaintext for callers allowed to read it, else the redacted form.

Rows come from the store with their ciphertext columns (`content_enc`, `metadata_enc`,
`fact_enc`, `summary_enc`, an entity's `name_enc` (also joined to its facts as
`source_name_enc` and `target_name_enc`), a user's `profile_enc`, and a user's per-field
ciphertexts from before migration 0017); these functions put the plaintext in the plain
columns when the caller may read it, and always drop the ciphertext columns. Decryption
runs off the event loop when a key is not in memory (that means a call to the key
provider) or the page is large, on it when every key is and the page is small. A value
whose key was shredded stays redacted: that data is gone by design.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from engram.crypto.protect import Column, Protector

__all__ = ["USER_FIELDS", "entities", "facts", "hits", "messages", "sessions", "users"]

Row = dict[str, Any]

# A page this small opens in well under a millisecond: less than a hop to a thread costs
# under load. A larger one would hold the event loop (and every other request) meanwhile.
_ON_LOOP_FIELDS = 256
_ON_LOOP_BYTES = 256 * 1024

_MESSAGE_FIELDS = (
    Column("content_enc", "content", "messages", "content"),
    Column("metadata_enc", "metadata", "messages", "metadata", json=True),
)
_FACT_FIELDS = (Column("fact_enc", "fact", "facts", "fact"),)
_ENTITY_FIELDS = (
    Column("summary_enc", "summary", "entities", "summary"),
    Column("name_enc", "name", "entities", "name"),
)
# The sealed names of a fact's entities, each bound to its entity's row: the key of the
# row holding that entity's uuid, and the column.
_FACT_NAMES = (
    ("source_uuid", Column("source_name_enc", "source_name", "entities", "name")),
    ("target_uuid", Column("target_name_enc", "target_name", "entities", "name")),
    # What an extractor reads of the facts an episode may contradict.
    ("source_uuid", Column("subject_enc", "subject", "entities", "name")),
    ("target_uuid", Column("object_enc", "object", "entities", "name")),
)
USER_FIELDS = (
    Column("profile_enc", "", "users", "profile", spread=True),
    # A user written before migration 0017: a ciphertext per field.
    Column("email_enc", "email", "users", "email"),
    Column("first_name_enc", "first_name", "users", "first_name"),
    Column("last_name_enc", "last_name", "users", "last_name"),
    Column("metadata_enc", "metadata", "users", "metadata", json=True),
)
_SESSION_FIELDS = (Column("metadata_enc", "metadata", "sessions", "metadata", json=True),)


async def _reveal(
    protector: Protector,
    tenant: str,
    rows: Sequence[Row],
    allowed: bool,
    fields: tuple[Column, ...],
    id_key: str = "uuid",
) -> None:
    if allowed and protector.keyrings is not None:
        page = protector.page(tenant, rows, fields, id_key)
        if page:
            # The whole page at once: its data keys are read and unwrapped together.
            count, size = page.sealed
            if page.in_memory() and count < _ON_LOOP_FIELDS and size < _ON_LOOP_BYTES:
                errors = page.open()  # CPU only, and little: cheaper than a thread hop
            else:
                errors = await asyncio.to_thread(page.open)
            for exc in errors:
                if exc.reason != "key_destroyed":
                    raise exc
    for row in rows:
        for f in fields:
            row.pop(f.enc, None)


async def messages(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal message content and metadata in place."""
    await _reveal(protector, tenant, rows, allowed, _MESSAGE_FIELDS)


async def facts(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal fact text, and the sealed names of its entities, in place."""
    await _reveal(protector, tenant, rows, allowed, _FACT_FIELDS)
    for id_key, column in _FACT_NAMES:
        await _reveal(protector, tenant, rows, allowed, (column,), id_key)


async def entities(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal entity summaries and sealed names in place."""
    await _reveal(protector, tenant, rows, allowed, _ENTITY_FIELDS)


async def users(protector: Protector, tenant: str, rows: Sequence[Row], allowed: bool) -> None:
    """Reveal users' e-mail, first and last name and metadata in place."""
    await _reveal(protector, tenant, rows, allowed, USER_FIELDS)


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

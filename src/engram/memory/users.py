"""Users as stored: identity and metadata classified, redacted and sealed on write.

E-mail, first and last name are personal data by nature (at least `pii`); metadata
values are classified like message metadata. The protected ones are sealed together, in
one ciphertext (the column `profile`), under the user's own data key, so crypto-shredding
the user makes them unreadable with the rest of their data; it binds the row's uuid,
which is chosen here before the row exists.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Mapping
from functools import partial
from typing import Any

from engram.crypto import reveal
from engram.crypto.protect import IDENTITY_FIELDS, KeyRef, Protector
from engram.errors import NotFoundError
from engram.memory.guard import off_loop, refuse_unreadable
from engram.memory.page import Page
from engram.store import keys, sessions, users
from engram.store.db import Database

__all__ = [
    "add_user",
    "delete_user",
    "get_user",
    "list_users",
    "seal_user",
    "update_user",
    "user_sessions",
]

Row = dict[str, Any]


def seal_user(
    protector: Protector,
    tenant: str,
    uuid: uuidlib.UUID,
    user_id: str,
    identity: Mapping[str, str | None],
    metadata: dict[str, Any],
    key: KeyRef | None = None,
) -> users.UserFields:
    """How to store the user's fields (blocking: may create or unwrap a key; `key`: the
    write's, when it looked the key up already).

    With encryption off nothing is classified (class -1), so that the first re-encryption
    run after it is turned on classifies and seals the row."""
    if not protector.enabled:
        return users.UserFields(
            email=identity.get("email"), first_name=identity.get("first_name"),
            last_name=identity.get("last_name"), metadata=dict(metadata),
            identity_sensitivity=-1, metadata_sensitivity=-1,
        )  # fmt: skip
    sealed = protector.seal_profile(tenant, str(uuid), user_id, identity, metadata, key)
    return users.UserFields(
        email=sealed.identity["email"],
        first_name=sealed.identity["first_name"],
        last_name=sealed.identity["last_name"],
        metadata=sealed.metadata,
        identity_sensitivity=int(sealed.identity_sensitivity),
        metadata_sensitivity=int(sealed.metadata_sensitivity),
        profile_enc=sealed.ciphertext,
    )


async def _sealed(
    protector: Protector, tenant: str, uuid: uuidlib.UUID, user_id: str,
    identity: dict[str, str | None], metadata: dict[str, Any], key: KeyRef | None = None,
) -> users.UserFields:  # fmt: skip
    seal = partial(seal_user, protector, tenant, uuid, user_id, identity, metadata, key)
    return await asyncio.to_thread(seal) if off_loop(protector, key) else seal()


async def add_user(
    db: Database, protector: Protector, tenant: str, user_id: str, fields: dict[str, Any],
    *, plaintext: bool,
) -> Row:  # fmt: skip
    """Store a new user (`fields`: email, first_name, last_name, metadata); the row as
    stored, revealed as the caller may read it (`plaintext`)."""
    row = await _add(db, protector, tenant, user_id, fields)
    await reveal.users(protector, tenant, [row], plaintext)
    return row


async def _add(
    db: Database, protector: Protector, tenant: str, user_id: str, fields: dict[str, Any],
    *, retried: bool = False,
) -> Row:  # fmt: skip
    """Store a new user; the row as stored.

    A new user's data key, when one is needed, is made here and stored in the same
    statement as the user, not in a transaction of its own."""
    uuid = uuidlib.uuid4()
    identity = {k: fields.get(k) for k in IDENTITY_FIELDS}
    metadata = fields.get("metadata") or {}
    key = None
    if protector.enabled and not retried:
        # A new user has no data key yet, so the first attempt drafts one without looking;
        # if the user has one all the same (its id was used before, or another write just
        # made it), storing the draft fails (KeyTaken) and the retry looks the key up.
        key = protector.key_ref(tenant, user_id, looked_up=True, draft=True)
    if retried or off_loop(protector, key):
        # Sealing will wait on the key store or a remote provider: refuse a taken id
        # first (409 before any key work). Otherwise sealing is CPU only, and the insert
        # itself refuses a taken id: a round trip saved on every new user.
        async with db.tenant(tenant, pipeline=True) as conn:
            taken = await users.send_exists(conn, user_id)
            looks = protector.enabled and retried
            found = await keys.send_key_id_of(conn, user_id) if looks else None
            if await taken.result():
                raise users.conflict(user_id)
            if found is not None:
                key_id = await found.result()
                key = protector.key_ref(tenant, user_id, looked_up=True, key_id=key_id, draft=True)
    try:
        sealed = await _sealed(protector, tenant, uuid, user_id, identity, metadata, key)
        async with db.tenant(tenant, pipeline=True) as conn:
            pending = key.pending if key is not None else None
            return await users.add(conn, tenant, user_id, uuid, sealed, key=pending)
    except BaseException as exc:
        if key is not None:
            key.drop()  # a key drafted here and not stored is forgotten
        if isinstance(exc, keys.KeyTaken) and not retried:
            # The user id has a key already (used before, or stored meanwhile by another
            # write): look it up and seal again under that one.
            return await _add(db, protector, tenant, user_id, fields, retried=True)
        raise


async def update_user(
    db: Database, protector: Protector, tenant: str, user_id: str, fields: dict[str, Any],
    *, plaintext: bool,
) -> Row:  # fmt: skip
    """Set the given identity fields and merge metadata key by key (as Zep does); the
    row as stored, revealed as the caller may read it."""
    row = await _update(db, protector, tenant, user_id, fields)
    await reveal.users(protector, tenant, [row], plaintext)
    return row


async def _update(
    db: Database, protector: Protector, tenant: str, user_id: str, fields: dict[str, Any]
) -> Row:
    async with db.tenant(tenant) as conn:
        row = await users.lock(conn, user_id)
        refuse_unreadable(protector, row, f"user {user_id!r}")
        # Merge into the real values, not their redacted forms (decrypting needs the key,
        # whoever the caller is: they only see the result as their role allows).
        current = dict(row)
        await reveal.users(protector, tenant, [current], True)
        identity = {
            k: fields[k] if fields.get(k) is not None else current[k] for k in IDENTITY_FIELDS
        }
        metadata = {**current["metadata"], **(fields.get("metadata") or {})}
        sealed = await _sealed(protector, tenant, row["uuid"], user_id, identity, metadata)
        return await users.replace(conn, user_id, sealed)


async def get_user(
    db: Database, protector: Protector, tenant: str, user_id: str, *, plaintext: bool
) -> Row:
    """One user (404 for an unknown one), revealed as the caller may read it."""
    async with db.tenant(tenant) as conn:
        row = await users.get(conn, user_id)
    await reveal.users(protector, tenant, [row], plaintext)
    return row


async def list_users(
    db: Database, protector: Protector, tenant: str, *, offset: int, limit: int, plaintext: bool
) -> Page:
    """A page of the tenant's users in creation order, and how many there are."""
    async with db.tenant(tenant, pipeline=True) as conn:  # one round trip for both
        listed = await users.send_list_ordered(conn, offset=offset, limit=limit)
        counted = await users.send_count(conn)
        rows, total = await listed.result(), await counted.result()
    await reveal.users(protector, tenant, rows, plaintext)
    return Page(rows, total)


async def delete_user(db: Database, tenant: str, user_id: str) -> None:
    """Delete a user with their sessions and messages (404 for an unknown one)."""
    async with db.tenant(tenant) as conn:
        await users.delete(conn, user_id)


async def user_sessions(
    db: Database, protector: Protector, tenant: str, user_id: str, *, plaintext: bool
) -> list[Row]:
    """A user's sessions (404 for an unknown user), revealed as the caller may read them."""
    async with db.tenant(tenant) as conn:
        if not await users.exists(conn, user_id):
            raise NotFoundError("user", user_id)
        rows = await sessions.list_for_user(conn, user_id)
    await reveal.sessions(protector, tenant, rows, plaintext)
    return rows

"""Classify and seal the users, sessions and message metadata stored before encryption
covered them.

Rows written before migration 0010, while encryption was off, or restored from an
archive made before it have class -1; so has the metadata of messages stored before
migration 0015 that declared a class (it was classified by the detectors alone) or was
sealed. Every re-encryption run calls this first: each batch is one transaction holding
its rows locked, so a run killed at any instant loses nothing and the next one takes the
rest; a row that a request is changing meanwhile is skipped (the request classifies it).
A crypto-shredded user's rows cannot be sealed: they keep only their redacted forms (the
run would otherwise fail on them, and every run after it).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from engram.crypto import reveal
from engram.crypto.envelope import FieldContext
from engram.crypto.protect import IDENTITY_FIELDS, Protector, sealed_or_redacted
from engram.crypto.sensitivity import combine, stored_class
from engram.errors import DecryptionError
from engram.memory.messages import seal_message_metadata
from engram.memory.sessions import seal_session
from engram.memory.users import seal_user
from engram.store import keys, users
from engram.store.keys import KeyPool
from engram.store.users import UserFields

__all__ = ["seal_unclassified"]

logger = logging.getLogger(__name__)


def _user(protector: Protector, tenant: str, row: dict[str, Any]) -> UserFields:
    if row["identity_sensitivity"] >= 0 or row["metadata_sensitivity"] >= 0:
        # A part classified already may hold redacted forms in its plain columns: its real
        # values are in its ciphertexts. Both parts are sealed together, so it is opened
        # and sealed again with the other (it classifies the same way). A destroyed key
        # opens nothing: the redacted forms are all there is.
        row = dict(row)
        for exc in protector.page(tenant, [row], reveal.USER_FIELDS).open():
            if not (isinstance(exc, DecryptionError) and exc.reason == "key_destroyed"):
                raise exc
    identity = {k: row[k] for k in IDENTITY_FIELDS}
    return sealed_or_redacted(
        protector,
        lambda p: seal_user(p, tenant, row["uuid"], row["user_id"], identity, row["metadata"]),
    )[0]


def _message(protector: Protector, tenant: str, row: dict[str, Any]) -> tuple[Any, int, Any]:
    """(metadata, class, ciphertext) to store for a message's metadata."""
    metadata = row["metadata"]
    if row["metadata_enc"] is not None:  # the plain column holds the redacted form
        ctx = FieldContext(tenant, "messages", "metadata", str(row["uuid"]))
        try:
            metadata = protector.open_metadata(ctx, bytes(row["metadata_enc"]))
        except DecryptionError as exc:
            if exc.reason != "key_destroyed":
                raise
            # Shredded: sealed for good, as protected as the message.
            return row["metadata"], row["sensitivity"], row["metadata_enc"]
    declared = combine(stored_class(metadata), stored_class(row["session_metadata"]))
    (sealed, level), _ = sealed_or_redacted(
        protector,
        lambda p: seal_message_metadata(p, tenant, row["uuid"], row["user_id"], metadata, declared),
    )
    return sealed.value, level, sealed.ciphertext


def seal_unclassified(pool: KeyPool, protector: Protector, tenant: str, batch: int = 500) -> int:
    """Classify and seal every unclassified user, session and message metadata of `tenant`;
    returns how many."""
    if not protector.enabled:
        return 0
    done = 0
    while True:
        with pool.tenant(tenant) as conn:
            rows = keys.unclassified_users(conn, batch)
            for r in rows:
                users.classify(conn, r["uuid"], _user(protector, tenant, r))
        done += len(rows)
        if not rows:
            break
    while True:
        with pool.tenant(tenant) as conn:
            rows = keys.unclassified_sessions(conn, batch)
            for r in rows:
                (sealed, level), _ = sealed_or_redacted(protector, partial(
                    seal_session, tenant=tenant, uuid=r["uuid"], user_id=r["user_id"],
                    metadata=r["metadata"], declared=stored_class(r["metadata"]),
                ))  # fmt: skip
                keys.classify_session(conn, r["uuid"], sealed.value, level, sealed.ciphertext)
        done += len(rows)
        if not rows:
            break
    while True:
        with pool.tenant(tenant) as conn:
            rows = keys.unclassified_messages(conn, batch)
            for r in rows:
                keys.classify_message(conn, r["uuid"], *_message(protector, tenant, r))
        done += len(rows)
        if not rows:
            break
    if done:
        logger.info("classified and sealed %d user(s), session(s) and message(s) of tenant %s",
                    done, tenant)  # fmt: skip
    return done

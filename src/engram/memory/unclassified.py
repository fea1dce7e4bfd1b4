"""Classify and seal the users and sessions stored before encryption covered them.

Rows written before migration 0010, while encryption was off, or restored from an
archive made before it have class -1. Every re-encryption run calls this first: each
batch is one transaction holding its rows locked, so a run killed at any instant loses
nothing and the next one takes the rest; a row that a request is changing meanwhile is
skipped (the request classifies it).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from engram.crypto.protect import IDENTITY_FIELDS, Protector
from engram.crypto.sensitivity import Sensitivity, from_metadata
from engram.errors import ValidationError
from engram.memory.sessions import seal_session
from engram.memory.users import seal_user
from engram.store import keys
from engram.store.keys import KeyPool
from engram.store.users import UserFields

__all__ = ["seal_unclassified"]

logger = logging.getLogger(__name__)


def _user(protector: Protector, tenant: str, row: dict[str, Any]) -> UserFields:
    sealed = seal_user(
        protector, tenant, row["uuid"], row["user_id"],
        {k: row[k] for k in IDENTITY_FIELDS}, row["metadata"],
    )  # fmt: skip
    # A part that was classified already keeps what it has (its plain columns may hold
    # redacted forms, which must not be sealed as if they were the values).
    if row["identity_sensitivity"] >= 0:
        kept = ("identity_sensitivity", *IDENTITY_FIELDS, *(f"{k}_enc" for k in IDENTITY_FIELDS))
        sealed = replace(sealed, **{k: row[k] for k in kept})
    if row["metadata_sensitivity"] >= 0:
        kept = ("metadata", "metadata_sensitivity", "metadata_enc")
        sealed = replace(sealed, **{k: row[k] for k in kept})
    return sealed


def _declared(metadata: dict[str, Any], tenant: str) -> Sensitivity:
    try:
        return from_metadata(metadata)
    except ValidationError:  # stored before the value was checked on write
        logger.warning("a session of tenant %s declares an unknown sensitivity; "
                       "classifying its metadata by its values", tenant)  # fmt: skip
        return Sensitivity.NONE


def seal_unclassified(pool: KeyPool, protector: Protector, tenant: str, batch: int = 500) -> int:
    """Classify and seal every unclassified user and session of `tenant`; returns how many."""
    if not protector.enabled:
        return 0
    done = 0
    while True:
        with pool.tenant(tenant) as conn:
            rows = keys.unclassified_users(conn, batch)
            for r in rows:
                keys.classify_user(conn, r["uuid"], _user(protector, tenant, r))
        done += len(rows)
        if not rows:
            break
    while True:
        with pool.tenant(tenant) as conn:
            rows = keys.unclassified_sessions(conn, batch)
            for r in rows:
                sealed, level = seal_session(
                    protector, tenant, r["uuid"], r["user_id"], r["metadata"],
                    _declared(r["metadata"], tenant),
                )  # fmt: skip
                keys.classify_session(conn, r["uuid"], sealed.value, level, sealed.ciphertext)
        done += len(rows)
        if not rows:
            break
    if done:
        logger.info("classified and sealed %d user(s) and session(s) of tenant %s", done, tenant)
    return done

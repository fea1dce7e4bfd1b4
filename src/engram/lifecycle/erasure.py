"""GDPR erasure of one user, with a receipt that outlives it.

Steps, each committed with what it removed added to the receipt, so a re-run after a
crash (or a second request) completes a receipt in state ``running`` and counts
nothing twice: the user's jobs, archives in blob storage, each session with its
messages, episodes and the graph they support, the rest of the graph and the user row,
then the user's data keys (crypto-shredded) and the mapping of their audit pseudonyms
(the append-only audit log keeps its records, which then name nobody).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from engram.crypto import rotation
from engram.crypto.protect import Keyrings
from engram.errors import NotFoundError
from engram.lifecycle.archive import user_prefix
from engram.lifecycle.blobs import BlobStore, delete_prefix
from engram.store import archives, audit, erasure
from engram.store.db import Database

__all__ = ["erase_user", "receipt_json", "shred_user_keys", "user_hash"]

logger = logging.getLogger(__name__)


def user_hash(tenant: str, user_id: str) -> str:
    """SHA-256 of tenant and user id: how a receipt is found, even if the id is blanked."""
    return hashlib.sha256(f"{tenant}\x00{user_id}".encode()).hexdigest()


async def shred_user_keys(
    db: Database, keyrings: Keyrings | None, tenant: str, user_id: str
) -> int:
    """Crypto-shred the user's data key: every version destroyed through the keyring (so
    the user's ciphertexts in backups can never be opened again, and no process keeps
    it cached here), then the key rows deleted so that the user id leaves ``data_keys``
    too. Returns the key versions removed."""
    if keyrings is not None:
        await asyncio.to_thread(rotation.shred_user, keyrings, tenant, user_id)
    async with db.tenant(tenant) as conn:
        return await erasure.delete_data_keys(conn, user_id)


def receipt_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "receipt_id": str(row["receipt_id"]),
        "tenant_id": row["tenant_id"],
        "user_id": row["user_id"],
        "user_id_sha256": row["user_id_sha256"],
        "state": row["state"],
        "requested_by": row["requested_by"],
        "removed": row["counts"],
        "started_at": row["started_at"].isoformat(),
        "completed_at": row["completed_at"].isoformat() if row["completed_at"] else None,
    }


async def erase_user(
    db: Database,
    store_factory: Callable[[], BlobStore],
    tenant: str,
    user_id: str,
    actor: str,
    *,
    keyrings: Keyrings | None = None,
) -> dict[str, Any]:
    """Erase everything of ``user_id`` in ``tenant``; return the completed receipt."""
    digest = user_hash(tenant, user_id)
    async with db.tenant(tenant) as conn:
        latest = await erasure.latest_receipt(conn, digest)
        present = await erasure.user_exists(conn, user_id)
        if not present and (latest is None or latest["state"] == "completed"):
            if latest is not None:
                return receipt_json(latest)  # already erased: the same answer again
            raise NotFoundError("user", user_id)
        receipt = await erasure.start(conn, tenant, user_id, digest, actor)
    rid = receipt["receipt_id"]
    logger.info("erasing user %s of tenant %s (receipt %s)", user_id, tenant, rid)

    async with db.tenant(tenant) as conn:
        await erasure.add_counts(
            conn, rid, {"jobs": await erasure.delete_jobs(conn, tenant, user_id)}
        )

    async with db.tenant(tenant) as conn:
        records = await archives.of_user(conn, user_id)
    store = store_factory() if records else None
    for record in records:
        assert store is not None
        blobs = await asyncio.to_thread(delete_prefix, store, record["prefix"])
        async with db.tenant(tenant) as conn:
            await archives.delete_record(conn, record["archive_id"])
            await erasure.add_counts(
                conn,
                rid,
                {
                    "archives": 1,
                    "archive_objects": blobs,
                    "archived_messages": int(record["counts"].get("messages", 0)),
                },
            )
    if records:
        assert store is not None
        # Objects of attempts whose record is gone (none expected; swept to be sure).
        stray = await asyncio.to_thread(delete_prefix, store, user_prefix(tenant, user_id))
        if stray:
            async with db.tenant(tenant) as conn:
                await erasure.add_counts(conn, rid, {"archive_objects": stray})

    async with db.tenant(tenant) as conn:
        sessions = await erasure.sessions_of(conn, user_id)
    for session_id in sessions:
        async with db.tenant(tenant) as conn:
            await erasure.add_counts(
                conn, rid, await erasure.delete_session(conn, user_id, session_id)
            )

    async with db.tenant(tenant) as conn:
        await erasure.add_counts(conn, rid, await erasure.delete_rest(conn, user_id))
    shredded = await shred_user_keys(db, keyrings, tenant, user_id)
    async with db.tenant(tenant) as conn:
        await erasure.add_counts(
            conn,
            rid,
            {
                "data_key_versions": shredded,
                # Last, once the user row is gone (an audit write in flight holds it
                # until its own mapping is committed, so none is left behind).
                "audit_pseudonyms": await audit.forget_user(conn, user_id),
            },
        )
        done = await erasure.complete(conn, rid)
    logger.info("erased user %s of tenant %s: %s", user_id, tenant, done["counts"])
    return receipt_json(done)

"""Key rotation: new data-key versions, re-encryption runs, retiring and shredding.

Re-encryption walks every ciphertext column in uuid order, in batches. Each batch is one
transaction that rewrites its rows compare-and-set (a row changed meanwhile is left for
the next pass) and saves the checkpoint with them, so a run killed at any instant resumes
where its last batch committed and never rewrites a row twice. When a pass ends, a scan
counts the ciphertexts still on a non-primary version; the run is done only when that
count is zero (writers that still held the old primary in their cache are caught by the
next pass).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engram.crypto.cipher import FieldCipher
from engram.crypto.envelope import Envelope, FieldContext
from engram.crypto.keyring import Keyring, KeyState
from engram.crypto.protect import Keyrings
from engram.errors import NotFoundError, ValidationError
from engram.store import keys
from engram.store.keys import KeyPool, PgKeyStore

__all__ = [
    "KeyStatus",
    "destroy",
    "primary_age_days",
    "reencrypt",
    "retire",
    "rotate_data_keys",
    "rotate_kek",
    "shred_user",
    "stale_fields",
    "status",
]

logger = logging.getLogger(__name__)


def _shredded(ring: Keyring) -> set[uuidlib.UUID]:
    """Keys whose every version was destroyed: their fields can never move or open."""
    store = ring.store
    assert isinstance(store, PgKeyStore)
    states: dict[uuidlib.UUID, set[KeyState]] = {}
    for r in store.all_keys():
        states.setdefault(r.key_id, set()).add(r.state)
    return {k for k, v in states.items() if v == {KeyState.DESTROYED}}


def _live_keys(ring: Keyring) -> list[uuidlib.UUID]:
    store = ring.store
    assert isinstance(store, PgKeyStore)
    seen: dict[uuidlib.UUID, bool] = {}
    for r in store.all_keys():
        if r.state is not KeyState.DESTROYED:
            seen[r.key_id] = True
    return list(seen)


def primary_age_days(keyrings: Keyrings, tenant: str, now: datetime) -> float | None:
    """Days since the newest primary data-key version of `tenant` was made (None: no keys)."""
    store = keyrings.get(tenant).store
    assert isinstance(store, PgKeyStore)
    made = [r.created_at for r in store.all_keys() if r.state is KeyState.PRIMARY]
    return (now - max(made)).total_seconds() / 86400 if made else None


def rotate_data_keys(keyrings: Keyrings, tenant: str) -> int:
    """A new primary version of every live data key of `tenant`; returns how many."""
    ring = keyrings.get(tenant)
    ids = _live_keys(ring)
    for key_id in ids:
        ring.rotate(key_id)
    logger.info("rotated %d data key(s) of tenant %s", len(ids), tenant)
    return len(ids)


def rotate_kek(keyrings: Keyrings, tenants: list[str]) -> tuple[str, int]:
    """A new key-encryption key, then every data key rewrapped under it."""
    kek = keyrings.provider.new_kek()
    count = 0
    for tenant in tenants:
        ring = keyrings.get(tenant)
        for key_id in _live_keys(ring):
            count += ring.rewrap(key_id, kek)
    return kek, count


def stale_fields(pool: KeyPool, keyrings: Keyrings, tenant: str) -> int:
    """Ciphertexts of `tenant` on a version that is not their key's primary."""
    ring = keyrings.get(tenant)
    ring.forget_primaries()
    with pool.tenant(tenant) as conn:
        in_use = keys.key_versions_in_use(conn)
    dead = _shredded(ring)
    stale = 0
    for (key_id, version), n in in_use.items():
        if key_id in dead:
            continue
        try:
            if ring.primary_version(key_id) != version:
                stale += n
        except (NotFoundError, ValidationError):
            stale += n
    return stale


@dataclass(frozen=True)
class KeyStatus:
    """Fields per key version and the latest re-encryption runs, for `engram keys status`."""

    versions: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    unclassified: int = 0  # users, sessions, message metadata not yet classified (next run seals)


def status(pool: KeyPool, keyrings: Keyrings, tenant: str) -> KeyStatus:
    ring = keyrings.get(tenant)
    store = ring.store
    assert isinstance(store, PgKeyStore)
    with pool.tenant(tenant) as conn:
        in_use = keys.key_versions_in_use(conn)
        runs = keys.latest_runs(conn)
        unclassified = keys.unclassified(conn)
    versions = [
        {
            "key_id": str(r.key_id),
            "user": r.user,
            "version": r.version,
            "state": r.state.value,
            "kek": r.wrapped.kek_id if r.wrapped else None,
            "fields": in_use.get((r.key_id, r.version), 0),
        }
        for r in store.all_keys()
    ]
    return KeyStatus(versions, runs, unclassified)


def _versions_numbered(ring: Keyring, version: int) -> list[uuidlib.UUID]:
    store = ring.store
    assert isinstance(store, PgKeyStore)
    return [r.key_id for r in store.all_keys() if r.version == version]


def retire(pool: KeyPool, keyrings: Keyrings, tenant: str, version: int) -> int:
    """Disable `version` of every key of `tenant`; refused while any field still uses it."""
    ring = keyrings.get(tenant)
    with pool.tenant(tenant) as conn:
        in_use = keys.key_versions_in_use(conn)
    dead = _shredded(ring)
    using = sum(n for (k, v), n in in_use.items() if v == version and k not in dead)
    if using:
        raise ValidationError(
            f"{using} field(s) of tenant {tenant!r} are still encrypted with version {version}",
            hint="run `engram keys reencrypt` and wait until `engram keys status` shows 0",
        )
    ids = _versions_numbered(ring, version)
    if not ids:
        raise NotFoundError("data key version", str(version))
    for key_id in ids:
        ring.disable(key_id, version)
    return len(ids)


def destroy(keyrings: Keyrings, tenant: str, version: int) -> int:
    """Erase the wrapped keys of retired `version` for good."""
    ring = keyrings.get(tenant)
    ids = _versions_numbered(ring, version)
    if not ids:
        raise NotFoundError("data key version", str(version))
    for key_id in ids:
        ring.destroy(key_id, version)
    return len(ids)


def shred_user(keyrings: Keyrings, tenant: str, user: str) -> int:
    """Crypto-shred `user`'s data key: every version destroyed; returns versions destroyed."""
    ring = keyrings.get(tenant)
    key_id = ring.store.find(tenant, user)
    if key_id is None:
        return 0
    return ring.shred(key_id)


def reencrypt(
    pool: KeyPool,
    keyrings: Keyrings,
    tenant: str,
    run_id: int,
    *,
    batch: int = 500,
    pause_s: float = 0.0,
    max_passes: int = 100,
    on_batch: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Move every ciphertext of `tenant` to its key's primary version; returns rows moved."""
    ring = keyrings.get(tenant)
    ring.forget_primaries()
    cipher = FieldCipher(ring)
    dead = _shredded(ring)
    moved_total = 0
    with pool.tenant(tenant) as conn:
        row = keys.run(conn, run_id)
    if row is None:
        raise NotFoundError("re-encryption run", str(run_id))
    if row["status"] == "done":
        return 0
    checkpoint: dict[str, Any] = dict(row["checkpoint"])
    passes = int(row["passes"])
    while passes < max_passes:
        for table, fields in keys.ENCRYPTED_FIELDS.items():
            after = checkpoint.get(table)
            while True:
                if stop is not None and stop.is_set():
                    return moved_total
                with pool.tenant(tenant) as conn:
                    rows = keys.encrypted_batch(
                        conn, table, uuidlib.UUID(after) if after else None, batch
                    )
                    if not rows:
                        break
                    moved = 0
                    for r in rows:
                        for column, field in fields:
                            old = r[column]
                            if old is None or Envelope.from_bytes(bytes(old)).key_id in dead:
                                continue
                            ctx = FieldContext(tenant, table, field, str(r["uuid"]))
                            new = cipher.reencrypt_bytes(bytes(old), ctx)
                            if new is not None and keys.swap_ciphertext(
                                conn, table, column, r["uuid"], bytes(old), new
                            ):
                                moved += 1
                    after = str(rows[-1]["uuid"])
                    checkpoint[table] = after
                    keys.save_checkpoint(conn, run_id, checkpoint, moved, passes)
                moved_total += moved
                if on_batch is not None:
                    on_batch(moved)
                if pause_s:
                    time.sleep(pause_s)
        left = stale_fields(pool, keyrings, tenant)
        passes += 1
        checkpoint = {}
        with pool.tenant(tenant) as conn:
            if left == 0:
                keys.save_checkpoint(conn, run_id, checkpoint, 0, passes)
                keys.finish_run(conn, run_id, "done")
                logger.info("re-encryption run %d of %s done: %d moved",
                            run_id, tenant, moved_total)  # fmt: skip
                return moved_total
            keys.save_checkpoint(conn, run_id, checkpoint, 0, passes)
        logger.info("re-encryption run %d: %d field(s) still on old versions; another pass",
                    run_id, left)  # fmt: skip
        time.sleep(min(5.0, 0.5 * passes))
    with pool.tenant(tenant) as conn:
        keys.finish_run(
            conn, run_id, "failed", f"fields still on old versions after {passes} passes"
        )
    return moved_total

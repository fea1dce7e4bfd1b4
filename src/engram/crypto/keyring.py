"""Data keys: one per tenant and user, in versions, each stored wrapped by a key provider.

A version's state says what it may do::

    primary    encrypts new values and decrypts (exactly one per key)
    active     decrypts only (an older version, or a newer one not yet promoted)
    disabled   decrypts nothing; can be enabled again (a retired version)
    destroyed  its wrapped key is erased; what it encrypted is gone for good

Rotation is `rotate` (a new primary version; the old one stays active until the
re-encryption job has moved every row), or `add_version(primary=False)` then `promote`
when several processes must all hold the new version before anyone writes with it.
A new KEK is `provider.new_kek()` then `rewrap` for each key: the data keys, and so
the ciphertexts, stay the same. The records live in a `KeyStore`; the store must make
`put` atomic per (key id, version).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from uuid import UUID, uuid4

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.config import CryptoSettings
from engram.crypto.cache import DataKey, DataKeyCache
from engram.crypto.envelope import KEY_BYTES
from engram.crypto.providers import build_provider
from engram.crypto.providers.base import BatchUnwrap, KeyProvider
from engram.errors import DecryptionError, KeyUnavailableError, NotFoundError, ValidationError
from engram.store.keys import DataKeyRecord, KeyState, WrappedDek

__all__ = [
    "DataKeyRecord",
    "KeyState",
    "KeyStore",
    "Keyring",
    "MemoryKeyStore",
    "build_keyring",
]

logger = logging.getLogger(__name__)


class KeyStore(Protocol):
    """Where data-key records persist (a table in production, a dict in tests)."""

    def versions(self, key_id: UUID) -> list[DataKeyRecord]:
        """Every version of `key_id`, oldest first; empty if unknown."""
        ...

    def versions_many(self, key_ids: Collection[UUID]) -> dict[UUID, list[DataKeyRecord]]:
        """Every version of each of `key_ids`, in one look-up (unknown ids are left out)."""
        ...

    def find(self, tenant: str, user: str | None) -> UUID | None:
        """The key id of (tenant, user), if one was created."""
        ...

    def put(self, record: DataKeyRecord) -> bool:
        """Insert or replace the record for (key id, version); False when it was not
        stored: a first version for a (tenant, user) that already has one."""
        ...


class MemoryKeyStore:
    """A KeyStore in a dict: for tests and tools."""

    def __init__(self) -> None:
        self._records: dict[tuple[UUID, int], DataKeyRecord] = {}
        self._lock = threading.Lock()

    def versions(self, key_id: UUID) -> list[DataKeyRecord]:
        with self._lock:
            return sorted(
                (r for (k, _), r in self._records.items() if k == key_id), key=lambda r: r.version
            )

    def versions_many(self, key_ids: Collection[UUID]) -> dict[UUID, list[DataKeyRecord]]:
        out: dict[UUID, list[DataKeyRecord]] = {}
        for key_id in key_ids:
            if found := self.versions(key_id):
                out[key_id] = found
        return out

    def find(self, tenant: str, user: str | None) -> UUID | None:
        with self._lock:
            for r in self._records.values():
                if (r.tenant, r.user) == (tenant, user):
                    return r.key_id
            return None

    def put(self, record: DataKeyRecord) -> bool:
        with self._lock:
            if record.version == 1 and any(
                (r.tenant, r.user, r.version) == (record.tenant, record.user, 1)
                and r.key_id != record.key_id
                for r in self._records.values()
            ):
                return False
            self._records[(record.key_id, record.version)] = record
            return True


class Keyring:
    """Creates, rotates and unwraps data keys through a key provider, with a cache."""

    def __init__(
        self,
        provider: KeyProvider,
        store: KeyStore,
        *,
        cache: DataKeyCache | None = None,
        readers: Mapping[str, KeyProvider] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.store = store
        self.cache = cache if cache is not None else DataKeyCache()
        # Providers that only unwrap: the previous provider while moving to another.
        self.readers = dict(readers or {})
        self._clock = clock
        self._primary: dict[UUID, tuple[float, int]] = {}
        self._lock = threading.RLock()

    # --- reading -----------------------------------------------------------------------

    def versions(self, key_id: UUID) -> list[DataKeyRecord]:
        records = self.store.versions(key_id)
        if not records:
            raise NotFoundError("data key", str(key_id))
        return records

    def _record(self, key_id: UUID, version: int) -> DataKeyRecord:
        return self._pick(self.store.versions(key_id), key_id, version)

    @staticmethod
    def _pick(records: Sequence[DataKeyRecord], key_id: UUID, version: int) -> DataKeyRecord:
        for r in records:
            if r.version == version:
                return r
        raise DecryptionError(
            f"data key {key_id} v{version} does not exist",
            reason="unknown_key",
            key_id=str(key_id),
            key_version=version,
            hint="the value was written with a key this database does not have; "
            "restore the key table from the same backup as the data",
        )

    @staticmethod
    def _usable(record: DataKeyRecord) -> WrappedDek:
        """The wrapped key of a version that may decrypt; DecryptionError if it may not."""
        if record.state is KeyState.DISABLED:
            raise DecryptionError(
                f"data key {record.key_id} v{record.version} is disabled",
                reason="key_disabled",
                key_id=str(record.key_id),
                key_version=record.version,
                hint="re-enable it (engram keys enable) if rows still use it",
            )
        if record.state is KeyState.DESTROYED or record.wrapped is None:
            raise DecryptionError(
                f"data key {record.key_id} v{record.version} was destroyed",
                reason="key_destroyed",
                key_id=str(record.key_id),
                key_version=record.version,
                hint="this data was crypto-shredded and cannot be recovered",
            )
        return record.wrapped

    def _unwrapped(self, record: DataKeyRecord, plaintext: bytes) -> DataKey:
        if len(plaintext) != KEY_BYTES:
            raise DecryptionError(
                f"data key {record.key_id} v{record.version} unwrapped to {len(plaintext)} bytes",
                reason="unwrap_failed",
                key_id=str(record.key_id),
                key_version=record.version,
            )
        key = DataKey(record.key_id, record.version, record.tenant, AESGCM(plaintext))
        self.cache.put(key)
        return key

    def _unwrap(self, record: DataKeyRecord) -> DataKey:
        wrapped = self._usable(record)
        return self._unwrapped(record, self._provider_for(wrapped).unwrap(wrapped))

    def _unwrap_many(
        self, records: Sequence[DataKeyRecord]
    ) -> dict[tuple[UUID, int], DataKey | DecryptionError]:
        """Unwrap usable versions: one provider call per KEK where the provider batches."""
        out: dict[tuple[UUID, int], DataKey | DecryptionError] = {}
        by_provider: dict[str, list[tuple[DataKeyRecord, WrappedDek]]] = {}
        for r in records:
            try:
                wrapped = self._usable(r)
            except DecryptionError as exc:
                out[(r.key_id, r.version)] = exc
                continue
            by_provider.setdefault(wrapped.provider, []).append((r, wrapped))
        for group in by_provider.values():
            provider = self._provider_for(group[0][1])  # KeyUnavailableError: the page fails
            if isinstance(provider, BatchUnwrap):
                opened = provider.unwrap_many([w for _, w in group])
            else:
                opened = [_unwrap_one(provider, w) for _, w in group]
            for (r, _), plaintext in zip(group, opened, strict=True):
                try:
                    if isinstance(plaintext, DecryptionError):
                        raise plaintext
                    out[(r.key_id, r.version)] = self._unwrapped(r, plaintext)
                except DecryptionError as exc:
                    out[(r.key_id, r.version)] = exc
        return out

    def _provider_for(self, wrapped: WrappedDek) -> KeyProvider:
        if wrapped.provider == self.provider.name:
            return self.provider
        reader = self.readers.get(wrapped.provider)
        if reader is None:
            raise KeyUnavailableError(
                f"a data key is wrapped by {wrapped.provider!r}, which is not configured",
                provider=wrapped.provider,
                reason="misconfigured",
                hint="configure that provider as a reader until `rewrap` has moved every key",
            )
        return reader

    def decryption_key(self, key_id: UUID, version: int) -> DataKey:
        """The data key version a ciphertext names, from the cache or the provider."""
        return self.cache.get(key_id, version) or self._unwrap(self._record(key_id, version))

    def decryption_keys(
        self, wanted: Iterable[tuple[UUID, int]]
    ) -> dict[tuple[UUID, int], DataKey | DecryptionError]:
        """The data key versions a page of ciphertexts names: the cached ones, and the rest
        read from the store in one look-up and unwrapped together. A version that cannot
        decrypt (unknown, disabled, destroyed, damaged) maps to its DecryptionError; an
        unreachable provider raises KeyUnavailableError."""
        out: dict[tuple[UUID, int], DataKey | DecryptionError] = {}
        missing: list[tuple[UUID, int]] = []
        for slot in set(wanted):
            hit = self.cache.get(*slot)
            if hit is not None:
                out[slot] = hit
            else:
                missing.append(slot)
        if not missing:
            return out
        stored = self.store.versions_many({k for k, _ in missing})
        records: list[DataKeyRecord] = []
        for key_id, version in missing:
            try:
                records.append(self._pick(stored.get(key_id, []), key_id, version))
            except DecryptionError as exc:
                out[(key_id, version)] = exc
        out.update(self._unwrap_many(records))
        return out

    def primary_version(self, key_id: UUID) -> int:
        with self._lock:
            hit = self._primary.get(key_id)
            if hit is not None and hit[0] > self._clock():
                return hit[1]
        versions = self.versions(key_id)
        for r in versions:
            if r.state is KeyState.PRIMARY:
                with self._lock:
                    self._primary[key_id] = (self._clock() + self.cache.ttl_s, r.version)
                return r.version
        if versions and all(r.state is KeyState.DESTROYED for r in versions):
            raise DecryptionError(
                f"data key {key_id} was destroyed (crypto-shredded): nothing can be written "
                "under it",
                reason="key_destroyed",
                key_id=str(key_id),
                hint="erase the user (DELETE /v1/users/{id}?erase=true) or use a new user id",
            )
        raise ValidationError(f"data key {key_id} has no primary version", hint="promote one")

    def ready(self, key_id: UUID) -> bool:
        """Whether `encryption_key(key_id)` would answer from memory (no store, no provider)."""
        with self._lock:
            hit = self._primary.get(key_id)
            fresh = hit is not None and hit[0] > self._clock()
        return fresh and hit is not None and self.cache.get(key_id, hit[1]) is not None

    def cached_keys(self, names: Iterable[bytes]) -> dict[bytes, DataKey] | None:
        """The data key versions named (`cache.name_of`: as a ciphertext's header names
        them), when every one is in memory; else None (then `decryption_keys` reads the
        store or calls the provider)."""
        return self.cache.get_many(names)

    def forget_primaries(self) -> None:
        """Look the primary versions up again (another process may have rotated)."""
        with self._lock:
            self._primary.clear()

    def encryption_key(self, key_id: UUID) -> DataKey:
        """The primary version of `key_id`, for new ciphertexts."""
        return self.decryption_key(key_id, self.primary_version(key_id))

    # --- changing ----------------------------------------------------------------------

    def _wrap_checked(self, plaintext: bytes, kek_id: str | None = None) -> WrappedDek:
        """Wrap, then unwrap once: never store a data key the provider cannot give back."""
        wrapped = self.provider.wrap(plaintext, kek_id)
        if self.provider.unwrap(wrapped) != plaintext:
            raise KeyUnavailableError(
                "the provider returned a different key when unwrapping what it just wrapped",
                provider=self.provider.name,
                reason="server_error",
            )
        return wrapped

    def _save(self, record: DataKeyRecord) -> bool:
        stored = self.store.put(record)
        self.cache.evict(record.key_id, record.version)
        self._primary.pop(record.key_id, None)
        return stored

    def key_for(self, tenant: str, user: str | None = None, *, new: bool = False) -> UUID:
        """The data key of (tenant, user), created on first use.

        ``new``: the user is being created, so make the key without looking first; if one
        exists after all, the store keeps it and it is returned."""
        # Looked up each time: erasing a user deletes their key rows, and the same user
        # id then gets a new key (a key id cached here could outlive that in another
        # process, and data written under it would be lost).
        with self._lock:
            found = None if new else self.store.find(tenant, user)
            return found if found is not None else self._create_first(tenant, user)

    def _create_first(self, tenant: str, user: str | None) -> UUID:
        key_id, key, stored = self._new_key(tenant, user)
        if not stored:
            # Another process made the (tenant, user) key at the same moment, and the
            # store kept that one: only it may ever encrypt.
            winner = self.store.find(tenant, user)
            return winner if winner is not None else key_id
        # The new key is at hand: the first write needs neither the store nor the
        # provider again to use it.
        self.adopt(key)
        return key_id

    def draft(self, tenant: str, user: str | None) -> tuple[DataKeyRecord, DataKey]:
        """A new data key for (tenant, user), version 1 primary, wrapped and checked but not
        stored: the caller stores the record (in its own transaction, say) and calls
        `adopt` before using the key, `forget` if the record was not stored."""
        key_id = uuid4()
        plaintext = AESGCM.generate_key(256)
        wrapped = self._wrap_checked(plaintext)
        record = DataKeyRecord(
            key_id, 1, tenant, user, KeyState.PRIMARY, wrapped, datetime.now(UTC)
        )
        return record, DataKey(key_id, 1, tenant, AESGCM(plaintext))

    def adopt(self, key: DataKey) -> None:
        """Keep a drafted key in memory as its key's primary version: sealing under it
        then needs neither the store nor the provider."""
        self.cache.put(key)
        with self._lock:
            self._primary[key.key_id] = (self._clock() + self.cache.ttl_s, key.version)

    def forget(self, key_id: UUID) -> None:
        """Drop a key from memory (a draft whose record was not stored)."""
        self.cache.evict(key_id)
        with self._lock:
            self._primary.pop(key_id, None)

    def _new_key(self, tenant: str, user: str | None) -> tuple[UUID, DataKey, bool]:
        record, key = self.draft(tenant, user)
        with self._lock:
            stored = self._save(record)
        logger.info("created data key %s for tenant %s", record.key_id, tenant)
        return record.key_id, key, stored

    def create(self, tenant: str, user: str | None = None) -> UUID:
        """A new data key for (tenant, user), version 1 primary."""
        return self._new_key(tenant, user)[0]

    def add_version(self, key_id: UUID, *, primary: bool = True) -> int:
        """A new version of `key_id`; it becomes primary unless `primary` is False."""
        wrapped = self._wrap_checked(AESGCM.generate_key(256))
        with self._lock:
            records = self.versions(key_id)
            last = records[-1]
            version = last.version + 1
            state = KeyState.PRIMARY if primary else KeyState.ACTIVE
            if primary:
                for r in records:
                    if r.state is KeyState.PRIMARY:
                        self._save(replace(r, state=KeyState.ACTIVE))
            self._save(
                DataKeyRecord(
                    key_id, version, last.tenant, last.user, state, wrapped, datetime.now(UTC)
                )
            )
        logger.info("data key %s: new version %d (%s)", key_id, version, state)
        return version

    def rotate(self, key_id: UUID) -> int:
        """A new primary version; older ones stay readable."""
        return self.add_version(key_id, primary=True)

    def _set(self, key_id: UUID, version: int, state: KeyState) -> DataKeyRecord:
        records = {r.version: r for r in self.versions(key_id)}
        if version not in records:
            raise NotFoundError("data key version", f"{key_id} v{version}")
        record = records[version]
        if record.state is KeyState.DESTROYED:
            raise ValidationError(f"data key {key_id} v{version} was destroyed")
        if state is KeyState.PRIMARY:
            for r in records.values():
                if r.state is KeyState.PRIMARY and r.version != version:
                    self._save(replace(r, state=KeyState.ACTIVE))
        self._save(replace(record, state=state))
        return record

    def promote(self, key_id: UUID, version: int) -> None:
        """Make `version` the one new values are encrypted with."""
        with self._lock:
            if self._record_state(key_id, version) is KeyState.DISABLED:
                raise ValidationError(
                    f"data key {key_id} v{version} is disabled", hint="enable it first"
                )
            self._set(key_id, version, KeyState.PRIMARY)

    def disable(self, key_id: UUID, version: int) -> None:
        """Stop `version` decrypting (retire it). The primary cannot be disabled."""
        with self._lock:
            if self._record_state(key_id, version) is KeyState.PRIMARY:
                raise ValidationError(
                    f"data key {key_id} v{version} is the primary version",
                    hint="rotate first, re-encrypt, then disable the old version",
                )
            self._set(key_id, version, KeyState.DISABLED)

    def enable(self, key_id: UUID, version: int) -> None:
        """Let a disabled version decrypt again."""
        with self._lock:
            if self._record_state(key_id, version) is KeyState.DISABLED:
                self._set(key_id, version, KeyState.ACTIVE)

    def destroy(self, key_id: UUID, version: int) -> None:
        """Erase a disabled version's wrapped key for good."""
        with self._lock:
            state = self._record_state(key_id, version)
            if state is not KeyState.DISABLED:
                raise ValidationError(
                    f"data key {key_id} v{version} is {state}, not disabled",
                    hint="disable (retire) it first; destruction cannot be undone",
                )
            record = next(r for r in self.versions(key_id) if r.version == version)
            self._save(replace(record, state=KeyState.DESTROYED, wrapped=None))

    def shred(self, key_id: UUID) -> int:
        """Crypto-shred: destroy every version of `key_id`; returns how many were live."""
        count = 0
        with self._lock:
            for r in self.versions(key_id):
                if r.state is not KeyState.DESTROYED:
                    self._save(replace(r, state=KeyState.DESTROYED, wrapped=None))
                    count += 1
            self.cache.evict(key_id)
        logger.warning("shredded data key %s (%d versions)", key_id, count)
        return count

    def rewrap(self, key_id: UUID, kek_id: str | None = None) -> int:
        """Wrap every live version of `key_id` under `kek_id` (default: the current KEK)."""
        kek_id = kek_id or self.provider.current_kek()
        count = 0
        for r in self.versions(key_id):
            if r.wrapped is None or r.state is KeyState.DESTROYED:
                continue
            if r.wrapped.provider == self.provider.name and r.wrapped.kek_id == kek_id:
                continue
            plaintext = self._provider_for(r.wrapped).unwrap(r.wrapped)
            wrapped = self._wrap_checked(plaintext, kek_id)
            with self._lock:
                self._save(replace(r, wrapped=wrapped))
            count += 1
        return count

    def _record_state(self, key_id: UUID, version: int) -> KeyState:
        for r in self.versions(key_id):
            if r.version == version:
                return r.state
        raise NotFoundError("data key version", f"{key_id} v{version}")


def _unwrap_one(provider: KeyProvider, wrapped: WrappedDek) -> bytes | DecryptionError:
    try:
        return provider.unwrap(wrapped)
    except DecryptionError as exc:
        return exc


def build_keyring(settings: CryptoSettings, data_dir: Path, store: KeyStore) -> Keyring:
    """The configured provider, with a cache of `dek_cache_ttl_s` and `dek_cache_max`."""
    cache = DataKeyCache(ttl_s=settings.dek_cache_ttl_s, max_entries=settings.dek_cache_max)
    return Keyring(build_provider(settings, data_dir), store, cache=cache)

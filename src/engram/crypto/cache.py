"""Unwrapped data keys kept in memory for a bounded time and number, least recently used out."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DataKey", "DataKeyCache", "name_of"]


@dataclass(frozen=True, slots=True)
class DataKey:
    """One unwrapped data key version, ready to use, and the tenant that owns it."""

    key_id: UUID
    version: int
    tenant: str
    aead: AESGCM


def name_of(key_id: UUID, version: int) -> bytes:
    """A key version's name in the cache: its id's 16 bytes, then the version (4 bytes,
    big-endian), as a ciphertext's header names it after its format byte."""
    return key_id.bytes + version.to_bytes(4, "big")


class DataKeyCache:
    """Key version (`name_of`) -> unwrapped data key, for `ttl_s` seconds after the unwrap.

    The expiry runs from the unwrap, not the last use, so a key disabled or shredded in
    another process stops working here within `ttl_s`. ``ttl_s=0`` turns caching off.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        # Keyed by bytes, not (UUID, int): a bytes hash is computed in C, where a UUID's
        # is a Python call, and a page of rows looks a hundred keys up per request.
        self._entries: OrderedDict[bytes, tuple[float, DataKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_id: UUID, version: int) -> DataKey | None:
        """The cached key, or None when absent or expired."""
        name = name_of(key_id, version)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[name]
                return None
            self._entries.move_to_end(name)
            return entry[1]

    def get_many(self, names: Iterable[bytes]) -> dict[bytes, DataKey] | None:
        """The cached key of every name (`name_of`), or None when one is absent or expired
        (a page's keys: one lock and one clock reading for all of them)."""
        now = self._clock()
        out: dict[bytes, DataKey] = {}
        with self._lock:
            for name in names:
                entry = self._entries.get(name)
                if entry is None or entry[0] <= now:
                    return None
                self._entries.move_to_end(name)
                out[name] = entry[1]
        return out

    def put(self, key: DataKey) -> None:
        if self.ttl_s <= 0:
            return
        slot = name_of(key.key_id, key.version)
        with self._lock:
            self._entries[slot] = (self._clock() + self.ttl_s, key)
            self._entries.move_to_end(slot)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def evict(self, key_id: UUID, version: int | None = None) -> None:
        """Forget one version of a key, or all its versions (a scan of the cache)."""
        with self._lock:
            if version is not None:
                self._entries.pop(name_of(key_id, version), None)
                return
            prefix = key_id.bytes
            for k in [k for k in self._entries if k[:16] == prefix]:
                del self._entries[k]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

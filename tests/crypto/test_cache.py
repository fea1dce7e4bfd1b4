"""The data-key cache: unwraps once per TTL, bounded in size, and what an outage does."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.crypto import DataKey, DataKeyCache, FieldCipher, FieldContext, Keyring, MemoryKeyStore
from engram.crypto.cache import name_of
from engram.crypto.providers import LocalKeyProvider, WrappedDek
from engram.errors import KeyUnavailableError

from .conftest import Clock

CTX = FieldContext("acme", "messages", "content", "row-1")


class Flaky:
    """A provider wrapper that counts unwraps and can be switched off."""

    def __init__(self, inner: LocalKeyProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.unwraps = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise KeyUnavailableError(
                "connection refused", provider=self.name, reason="unreachable"
            )

    def current_kek(self) -> str:
        self._check()
        return self.inner.current_kek()

    def wrap(self, plaintext_dek: bytes, kek_id: str | None = None) -> WrappedDek:
        self._check()
        return self.inner.wrap(plaintext_dek, kek_id)

    def unwrap(self, wrapped: WrappedDek) -> bytes:
        self._check()
        self.unwraps += 1
        return self.inner.unwrap(wrapped)

    def new_kek(self) -> str:
        return self.inner.new_kek()

    def describe(self) -> dict[str, str]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def flaky(local: LocalKeyProvider) -> Flaky:
    return Flaky(local)


def _keyring(flaky: Flaky, clock: Clock, ttl_s: float = 60, max_entries: int = 100) -> Keyring:
    cache = DataKeyCache(ttl_s=ttl_s, max_entries=max_entries, clock=clock)
    return Keyring(flaky, MemoryKeyStore(), cache=cache, clock=clock)


def test_unwraps_once_per_ttl(flaky: Flaky, clock: Clock) -> None:
    keyring = _keyring(flaky, clock, ttl_s=60)
    cipher = FieldCipher(keyring)
    key_id = keyring.key_for("acme", "u1")  # create() unwraps once to verify
    keyring.cache.clear()
    flaky.unwraps = 0
    token = cipher.encrypt("x", CTX, key_id=key_id)
    for _ in range(50):
        assert cipher.decrypt(token, CTX) == "x"
    assert flaky.unwraps == 1
    clock.advance(59)
    cipher.decrypt(token, CTX)
    assert flaky.unwraps == 1
    clock.advance(2)  # past the TTL: unwrap again
    cipher.decrypt(token, CTX)
    assert flaky.unwraps == 2


def test_size_bound_evicts_least_recently_used(flaky: Flaky, clock: Clock) -> None:
    keyring = _keyring(flaky, clock, max_entries=2)
    cipher = FieldCipher(keyring)
    keys = [keyring.key_for("acme", f"u{i}") for i in range(3)]
    tokens = [cipher.encrypt("x", CTX, key_id=k) for k in keys]
    assert len(keyring.cache) == 2
    flaky.unwraps = 0
    cipher.decrypt(tokens[2], CTX)
    cipher.decrypt(tokens[1], CTX)
    assert flaky.unwraps == 0
    cipher.decrypt(tokens[0], CTX)  # was evicted
    assert flaky.unwraps == 1
    cipher.decrypt(tokens[1], CTX)  # recently used, still there
    assert flaky.unwraps == 1 and len(keyring.cache) == 2


def test_outage_cached_keys_work_until_the_ttl_then_503(flaky: Flaky, clock: Clock) -> None:
    keyring = _keyring(flaky, clock, ttl_s=30)
    cipher = FieldCipher(keyring)
    cached = keyring.key_for("acme", "u1")
    token = cipher.encrypt("x", CTX, key_id=cached)
    flaky.down = True
    assert cipher.decrypt(token, CTX) == "x"
    assert cipher.encrypt("y", CTX, key_id=cached).startswith("enc:v1:")
    with pytest.raises(KeyUnavailableError):  # a new key needs the provider
        keyring.key_for("acme", "u2")
    clock.advance(31)
    for attempt in (
        lambda: cipher.decrypt(token, CTX),
        lambda: cipher.encrypt("z", CTX, key_id=cached),
    ):
        with pytest.raises(KeyUnavailableError) as info:
            attempt()
        assert info.value.status == 503 and "connection refused" in str(info.value)
    flaky.down = False
    assert cipher.decrypt(token, CTX) == "x"


def test_ttl_zero_means_no_cache(flaky: Flaky, clock: Clock) -> None:
    keyring = _keyring(flaky, clock, ttl_s=0)
    cipher = FieldCipher(keyring)
    token = cipher.encrypt("x", CTX, key_id=keyring.key_for("acme"))
    flaky.unwraps = 0
    cipher.decrypt(token, CTX)
    cipher.decrypt(token, CTX)
    assert flaky.unwraps == 2 and len(keyring.cache) == 0


def test_state_changes_evict_at_once(flaky: Flaky, clock: Clock) -> None:
    keyring = _keyring(flaky, clock)
    key_id = keyring.key_for("acme")
    keyring.rotate(key_id)
    keyring.decryption_key(key_id, 1)
    keyring.disable(key_id, 1)
    assert keyring.cache.get(key_id, 1) is None


def test_cache_evict_one_or_all_versions(clock: Clock) -> None:
    from uuid import uuid4

    cache = DataKeyCache(ttl_s=10, clock=clock)
    k = uuid4()
    for v in (1, 2):
        cache.put(DataKey(k, v, "t", AESGCM(AESGCM.generate_key(256))))
    cache.evict(k, 1)
    assert cache.get(k, 1) is None and cache.get(k, 2) is not None
    cache.evict(k)
    assert len(cache) == 0


def test_a_page_of_keys_is_served_only_when_every_one_is_cached_and_fresh(clock: Clock) -> None:
    from uuid import uuid4

    cache = DataKeyCache(ttl_s=10, max_entries=10, clock=clock)
    keys = [DataKey(uuid4(), 1, "acme", AESGCM(AESGCM.generate_key(256))) for _ in range(3)]
    for key in keys[:2]:
        cache.put(key)
    clock.advance(5)
    cache.put(keys[2])
    slots = [name_of(k.key_id, k.version) for k in keys]
    assert cache.get_many(slots) == dict(zip(slots, keys, strict=True))
    assert cache.get_many([*slots, name_of(uuid4(), 1)]) is None  # one missing: none
    # Another version of a cached key is another key: not served.
    assert cache.get_many([name_of(keys[0].key_id, 2)]) is None
    clock.advance(6)  # the first two expired, the third is fresh
    assert cache.get_many(slots) is None
    assert cache.get_many(slots[2:]) == {slots[2]: keys[2]}

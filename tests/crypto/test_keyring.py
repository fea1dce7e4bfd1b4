"""Data keys: version states, KEK rotation, destruction, shredding.

`test_rotation_matrix` here is the 4x4 matrix on the keyring alone (in-memory key store);
the same matrix through Postgres, the API and the reveal path is
`tests/crypto/test_rotation_matrix.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from uuid import UUID, uuid4

import pytest

from engram.crypto import (
    DataKeyCache,
    FieldCipher,
    FieldContext,
    Keyring,
    KeyState,
    MemoryKeyStore,
)
from engram.crypto.keyring import DataKeyRecord
from engram.crypto.providers import LocalKeyProvider
from engram.errors import DecryptionError, KeyUnavailableError, NotFoundError, ValidationError
from tests.crypto.conftest import Clock

CTX = FieldContext("acme", "facts", "fact", "row-1")
P, A, D = KeyState.PRIMARY, KeyState.ACTIVE, KeyState.DISABLED

# The four keysets: (state of version 1 "old", state of version 2 "new"); None: absent.
KEYSETS = {
    "old primary": (P, None),
    "old+new, old primary": (P, A),
    "new primary": (A, P),
    "old disabled": (D, P),
}
WRITES_WITH = {"old primary": 1, "old+new, old primary": 1, "new primary": 2, "old disabled": 2}
# What reading a ciphertext of version v gives under each keyset.
EXPECT = {
    ("old primary", 1): "ok",
    ("old primary", 2): "unknown_key",
    ("old+new, old primary", 1): "ok",
    ("old+new, old primary", 2): "ok",
    ("new primary", 1): "ok",
    ("new primary", 2): "ok",
    ("old disabled", 1): "key_disabled",
    ("old disabled", 2): "ok",
}


def test_rotation_matrix(local: LocalKeyProvider) -> None:
    # One data key with two versions, as a staged rotation makes it.
    origin = Keyring(local, MemoryKeyStore())
    key_id = origin.create("acme", "u1")
    assert origin.add_version(key_id, primary=False) == 2
    v1, v2 = origin.versions(key_id)

    def keyring_for(keyset: str) -> Keyring:
        store = MemoryKeyStore()
        old, new = KEYSETS[keyset]
        store.put(dataclasses.replace(v1, state=old))
        if new is not None:
            store.put(dataclasses.replace(v2, state=new))
        return Keyring(local, store, cache=DataKeyCache())

    ciphers = {name: FieldCipher(keyring_for(name)) for name in KEYSETS}
    written = {}
    for name, cipher in ciphers.items():
        token = cipher.encrypt(f"written under {name}", CTX, key_id=key_id)
        assert cipher.keyring.encryption_key(key_id).version == WRITES_WITH[name]
        written[name] = token

    outcomes = {}
    for reader, cipher in ciphers.items():
        for writer, token in written.items():
            version = WRITES_WITH[writer]
            try:
                assert cipher.decrypt(token, CTX) == f"written under {writer}"
                outcome = "ok"
            except DecryptionError as exc:
                outcome = exc.reason
            outcomes[(reader, writer)] = outcome
            assert outcome == EXPECT[(reader, version)], (reader, writer)
    assert len(outcomes) == 16


def test_staged_rotation_through_the_keyring(cipher: FieldCipher, keyring: Keyring) -> None:
    key_id = keyring.key_for("acme", "u1")
    old = cipher.encrypt("old", CTX, key_id=key_id)
    v2 = keyring.add_version(key_id, primary=False)
    assert keyring.primary_version(key_id) == 1
    keyring.promote(key_id, v2)
    new = cipher.encrypt("new", CTX, key_id=key_id)
    assert [r.state for r in keyring.versions(key_id)] == [A, P]
    assert (cipher.decrypt(old, CTX), cipher.decrypt(new, CTX)) == ("old", "new")
    keyring.disable(key_id, 1)
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(old, CTX)
    assert info.value.reason == "key_disabled" and "engram keys enable" in str(info.value)
    keyring.enable(key_id, 1)
    assert cipher.decrypt(old, CTX) == "old"


def test_primary_cannot_be_disabled_and_disabled_cannot_be_promoted(keyring: Keyring) -> None:
    key_id = keyring.key_for("acme")
    with pytest.raises(ValidationError, match="primary"):
        keyring.disable(key_id, 1)
    keyring.rotate(key_id)
    keyring.disable(key_id, 1)
    with pytest.raises(ValidationError, match="enable it first"):
        keyring.promote(key_id, 1)
    with pytest.raises(NotFoundError):
        keyring.disable(key_id, 9)
    with pytest.raises(NotFoundError):
        keyring.versions(uuid4())


def test_destroy_needs_disabled_and_is_final(cipher: FieldCipher, keyring: Keyring) -> None:
    key_id = keyring.key_for("acme")
    old = cipher.encrypt("old", CTX, key_id=key_id)
    keyring.rotate(key_id)
    with pytest.raises(ValidationError, match="disable"):
        keyring.destroy(key_id, 1)
    keyring.disable(key_id, 1)
    keyring.destroy(key_id, 1)
    record = keyring.versions(key_id)[0]
    assert record.state is KeyState.DESTROYED and record.wrapped is None
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(old, CTX)
    assert info.value.reason == "key_destroyed"
    with pytest.raises(ValidationError, match="destroyed"):
        keyring.promote(key_id, 1)


def test_shred_makes_a_users_data_unreadable(cipher: FieldCipher, keyring: Keyring) -> None:
    mine, theirs = keyring.key_for("acme", "leaver"), keyring.key_for("acme", "stayer")
    a = cipher.encrypt("leaver's note", CTX, key_id=mine)
    keyring.rotate(mine)
    b = cipher.encrypt("leaver's newer note", CTX, key_id=mine)
    c = cipher.encrypt("stayer's note", CTX, key_id=theirs)
    assert cipher.decrypt(a, CTX) and cipher.decrypt(b, CTX)  # both cached now
    assert keyring.shred(mine) == 2
    for token in (a, b):
        with pytest.raises(DecryptionError) as info:
            cipher.decrypt(token, CTX)
        assert info.value.reason == "key_destroyed"
    assert cipher.decrypt(c, CTX) == "stayer's note"
    assert keyring.shred(mine) == 0


def test_kek_rotation_rewraps_without_touching_ciphertexts(
    cipher: FieldCipher, keyring: Keyring, local: LocalKeyProvider
) -> None:
    key_id = keyring.key_for("acme", "u1")
    keyring.rotate(key_id)
    token = cipher.encrypt("stays put", CTX, key_id=key_id)
    before = [r.wrapped for r in keyring.versions(key_id)]
    old_kek = local.current_kek()
    new_kek = local.new_kek()
    assert new_kek != old_kek
    assert keyring.rewrap(key_id) == 2
    after = keyring.versions(key_id)
    assert all(r.wrapped is not None and r.wrapped.kek_id == new_kek for r in after)
    assert [r.wrapped for r in after] != before
    keyring.cache.clear()
    assert cipher.decrypt(token, CTX) == "stays put"
    assert keyring.rewrap(key_id) == 0  # already there


def test_a_key_wrapped_by_an_unconfigured_provider_is_503(local: LocalKeyProvider) -> None:
    store = MemoryKeyStore()
    key_id = Keyring(local, store).create("acme")
    record = store.versions(key_id)[0]
    assert record.wrapped is not None
    store.put(
        dataclasses.replace(record, wrapped=dataclasses.replace(record.wrapped, provider="aws-kms"))
    )
    with pytest.raises(KeyUnavailableError) as info:
        Keyring(local, store).decryption_key(key_id, 1)
    assert info.value.status == 503 and info.value.reason == "misconfigured"


def test_an_unknown_key_id_is_a_clear_decryption_error(keyring: Keyring) -> None:
    with pytest.raises(DecryptionError) as info:
        keyring.decryption_key(uuid4(), 1)
    assert info.value.reason == "unknown_key" and "restore the key table" in str(info.value)


class CountingStore(MemoryKeyStore):
    """The in-memory store, counting look-ups (each is a database round trip in production)."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0  # page look-ups
        self.reads = 0  # versions of one key

    def versions(self, key_id: UUID) -> list[DataKeyRecord]:
        self.reads += 1
        return super().versions(key_id)

    def versions_many(self, key_ids: Collection[UUID]) -> dict[UUID, list[DataKeyRecord]]:
        self.lookups += 1
        return super().versions_many(key_ids)


def test_a_page_of_ciphertexts_reads_its_keys_in_one_look_up(
    local: LocalKeyProvider, clock: Clock
) -> None:
    store = CountingStore()
    keyring = Keyring(local, store, cache=DataKeyCache(ttl_s=60, clock=clock), clock=clock)
    cipher = FieldCipher(keyring)
    users = [keyring.key_for("acme", f"u{i}") for i in range(30)]
    page = [(cipher.encrypt_bytes(f"value {i}".encode(), CTX, key_id=k), CTX)
            for i, k in enumerate(users * 4)]  # fmt: skip
    keyring.rotate(users[0])  # a field of an older version opens too
    page.append((cipher.encrypt_bytes(b"newer", CTX, key_id=users[0]), CTX))
    keyring.rotate(users[1])
    keyring.disable(users[1], 1)
    keyring.cache.clear()

    opened = cipher.decrypt_many(page)
    assert store.lookups == 1
    for i, got in enumerate(opened[:-1]):
        if i % 30 == 1:  # under the disabled version: its reason, and nothing else fails
            assert isinstance(got, DecryptionError) and got.reason == "key_disabled"
        else:
            assert got == f"value {i}".encode()
    assert opened[-1] == b"newer"
    # Cached now: no look-up at all, until the cache's time is up (a version that did not
    # open is not cached: it is looked up again).
    readable = [p for i, p in enumerate(page) if i % 30 != 1]
    assert b"value 0" in cipher.decrypt_many(readable)
    assert store.lookups == 1
    clock.advance(61)
    cipher.decrypt_many(readable)
    assert store.lookups == 2
    # A ciphertext moved to another row still fails, alone.
    moved = cipher.decrypt_many([(page[0][0], dataclasses.replace(CTX, row_id="row-2"))])
    assert isinstance(moved[0], DecryptionError) and moved[0].reason == "authentication_failed"
    unknown = cipher.decrypt_many([(b"\x01" + uuid4().bytes + b"\x00\x00\x00\x01" + bytes(28),
                                     CTX)])  # fmt: skip
    assert isinstance(unknown[0], DecryptionError) and unknown[0].reason == "unknown_key"


def test_a_new_users_key_is_ready_at_once_and_a_lost_race_uses_the_winner(
    local: LocalKeyProvider,
) -> None:
    store = CountingStore()
    first = Keyring(local, store)
    key_id = first.key_for("acme", "new")
    before = store.reads
    # The first write after creating the key needs neither the store nor the provider.
    sealed = FieldCipher(first).encrypt_bytes(b"hello", CTX, key_id=key_id)
    assert store.reads == before and len(first.cache) == 1

    class Late(MemoryKeyStore):
        """Another process's view: it looked before the first key was stored."""

        looked = False

        def find(self, tenant: str, user: str | None) -> UUID | None:
            if not self.looked:
                self.looked = True
                return None
            return store.find(tenant, user)

        def put(self, record: DataKeyRecord) -> bool:
            return store.put(record)  # the store keeps the first key of (tenant, user)

        def versions(self, key_id: UUID) -> list[DataKeyRecord]:
            return store.versions(key_id)

    second = Keyring(local, Late())
    assert second.key_for("acme", "new") == key_id
    assert len(second.cache) == 0  # its own new key was never cached, so never used
    assert FieldCipher(second).decrypt_bytes(sealed, CTX) == b"hello"

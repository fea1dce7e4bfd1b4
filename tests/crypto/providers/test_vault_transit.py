"""Contract tests: the vault-transit provider against a local server speaking Vault's
transit wire protocol (tests/crypto/providers/vault_server.py)."""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from engram.config import CryptoSettings, VaultTransitSettings
from engram.crypto import FieldCipher, FieldContext, Keyring, MemoryKeyStore
from engram.crypto.providers import LocalKeyProvider, build_provider
from engram.crypto.providers.vault_transit import VaultTransitKeyProvider
from engram.errors import DecryptionError, KeyUnavailableError

from .conftest import free_port
from .contract import check_keyring, check_provider
from .vault_server import FakeVault, run_vault

TOKEN = "hvs.test-token"


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    with run_vault(TOKEN) as state:
        yield state


@pytest.fixture
def provider(vault: FakeVault) -> Iterator[VaultTransitKeyProvider]:
    p = VaultTransitKeyProvider(url=vault.url, token=TOKEN, key_name="engram")
    yield p
    p.close()


def test_contract(provider: VaultTransitKeyProvider, vault: FakeVault) -> None:
    check_provider(provider)
    check_keyring(provider)
    assert vault.keys["engram"].latest == 3


def test_wire_format_is_vaults(provider: VaultTransitKeyProvider, vault: FakeVault) -> None:
    dek = os.urandom(32)
    assert provider.current_kek() == "engram:v1"  # created on first use
    wrapped = provider.wrap(dek)
    assert wrapped.blob.startswith(b"vault:v1:") and wrapped.kek_id == "engram:v1"
    raw = base64.b64decode(wrapped.blob.split(b":", 2)[2])
    assert len(raw) == 12 + 32 + 16  # nonce, ciphertext, tag
    provider.new_kek()
    assert provider.wrap(dek).blob.startswith(b"vault:v2:")
    assert provider.wrap(dek, "engram:v1").blob.startswith(b"vault:v1:")
    assert {p for _, p in vault.calls} == {
        "/v1/transit/keys/engram",
        "/v1/transit/encrypt/engram",
        "/v1/transit/keys/engram/rotate",
    }


def test_min_decryption_version_retires_old_wraps(
    provider: VaultTransitKeyProvider, vault: FakeVault
) -> None:
    old = provider.wrap(os.urandom(32))
    provider.new_kek()
    new = provider.wrap(os.urandom(32))
    vault.keys["engram"].min_decryption_version = 2
    with pytest.raises(DecryptionError) as info:
        provider.unwrap(old)
    assert info.value.reason == "unwrap_failed" and "too old" in str(info.value)
    assert len(provider.unwrap(new)) == 32


def test_a_blob_of_another_version_is_refused(provider: VaultTransitKeyProvider) -> None:
    wrapped = provider.wrap(os.urandom(32))
    with pytest.raises(DecryptionError, match="not a Vault ciphertext"):
        provider.unwrap(dataclasses.replace(wrapped, kek_id="engram:v7"))


def test_bad_token_is_denied(vault: FakeVault) -> None:
    p = VaultTransitKeyProvider(url=vault.url, token="wrong", key_name="engram")
    with pytest.raises(KeyUnavailableError) as info:
        p.wrap(os.urandom(32))
    assert info.value.reason == "denied" and "permission denied" in str(info.value)
    assert info.value.status == 503
    p.close()


def test_sealed_vault_is_503(provider: VaultTransitKeyProvider, vault: FakeVault) -> None:
    wrapped = provider.wrap(os.urandom(32))
    vault.sealed = True
    with pytest.raises(KeyUnavailableError) as info:
        provider.unwrap(wrapped)
    assert info.value.reason == "unreachable" and "Vault is sealed" in str(info.value)


def test_a_deleted_transit_key_is_kek_missing(
    provider: VaultTransitKeyProvider, vault: FakeVault
) -> None:
    wrapped = provider.wrap(os.urandom(32))
    del vault.keys["engram"]
    with pytest.raises(KeyUnavailableError) as info:
        provider.unwrap(wrapped)
    assert info.value.reason == "kek_missing"


def test_unreachable_vault_fails_fast_with_503() -> None:
    p = VaultTransitKeyProvider(url=f"http://127.0.0.1:{free_port()}", token=TOKEN, timeout_s=1)
    start = time.monotonic()
    with pytest.raises(KeyUnavailableError) as info:
        p.wrap(os.urandom(32))
    assert time.monotonic() - start < 3
    assert info.value.reason == "unreachable" and "cannot reach" in str(info.value)
    p.close()


def test_move_from_local_to_vault_by_rewrapping(
    vault: FakeVault, provider: VaultTransitKeyProvider, tmp_path: Path
) -> None:
    local = LocalKeyProvider(tmp_path / "kek.json")
    store = MemoryKeyStore()
    ctx = FieldContext("acme", "messages", "content", "r1")
    before = Keyring(local, store)
    key_id = before.key_for("acme", "u1")
    token = FieldCipher(before).encrypt("moved", ctx, key_id=key_id)
    after = Keyring(provider, store, readers={"local": local})
    assert after.rewrap(key_id) == 1
    assert store.versions(key_id)[0].wrapped.provider == "vault-transit"  # type: ignore[union-attr]
    assert FieldCipher(Keyring(provider, store)).decrypt(token, ctx) == "moved"


def test_built_from_settings(vault: FakeVault) -> None:
    settings = CryptoSettings(
        provider="vault-transit",
        vault=VaultTransitSettings(url=vault.url, token=SecretStr(TOKEN), key_name="k2"),
    )
    p = build_provider(settings, data_dir=Path("/nonexistent"))
    assert isinstance(p, VaultTransitKeyProvider)
    assert p.current_kek() == "k2:v1"
    p.close()


def test_many_keys_unwrap_in_one_call_per_transit_key(
    provider: VaultTransitKeyProvider, vault: FakeVault
) -> None:
    keyring = Keyring(provider, MemoryKeyStore())
    cipher = FieldCipher(keyring)
    ctx = FieldContext("acme", "users", "email", "row-1")
    users = [keyring.key_for("acme", f"u{i}") for i in range(12)]
    provider.new_kek()  # keys wrapped under engram:v1 and engram:v2 are one transit key
    users.append(keyring.key_for("acme", "late"))
    page = [(cipher.encrypt_bytes(f"v{i}".encode(), ctx, key_id=k), ctx)
            for i, k in enumerate(users)]  # fmt: skip
    keyring.cache.clear()
    vault.calls.clear()
    assert cipher.decrypt_many(page) == [f"v{i}".encode() for i in range(13)]
    assert vault.calls == [("POST", "/v1/transit/decrypt/engram")]

    # A damaged wrapped key fails alone, with the reason; the others still open.
    damaged = keyring.versions(users[3])[0]
    assert damaged.wrapped is not None
    blob = bytearray(damaged.wrapped.blob)
    blob[-3] = ord("A") if blob[-3] != ord("A") else ord("B")
    keyring.store.put(dataclasses.replace(
        damaged, wrapped=dataclasses.replace(damaged.wrapped, blob=bytes(blob))))  # fmt: skip
    keyring.cache.clear()
    wrapped = [r.wrapped for k in users[2:5] for r in keyring.versions(k) if r.wrapped]
    opened = provider.unwrap_many(wrapped)
    assert isinstance(opened[1], DecryptionError) and opened[1].reason == "unwrap_failed"
    assert all(isinstance(o, bytes) and len(o) == 32 for o in (opened[0], opened[2]))
    got = cipher.decrypt_many(page)
    assert isinstance(got[3], DecryptionError) and got[3].reason == "unwrap_failed"
    assert [g for i, g in enumerate(got) if i != 3] == [
        f"v{i}".encode() for i in range(13) if i != 3
    ]
    # Vault sealed: the whole page waits for it (503), nothing half-read.
    keyring.cache.clear()
    vault.sealed = True
    with pytest.raises(KeyUnavailableError) as info:
        cipher.decrypt_many(page)
    assert info.value.reason == "unreachable"

"""What every key provider must do, run against each real or contract-tested backend."""

from __future__ import annotations

import dataclasses
import os

import pytest

from engram.crypto import FieldCipher, FieldContext, Keyring, MemoryKeyStore
from engram.crypto.providers import KeyProvider
from engram.errors import DecryptionError

CTX = FieldContext("acme", "messages", "content", "row-1")


def check_provider(provider: KeyProvider, *, randomised: bool = True) -> None:
    """Round trips, KEK rotation with old wraps still readable, and tamper refusal.

    AES key wrap (RFC 3394/5649) is deterministic by design: pass randomised=False.
    """
    assert isinstance(provider, KeyProvider)
    assert provider.describe()["provider"] == provider.name
    dek = os.urandom(32)
    first_kek = provider.current_kek()
    wrapped = provider.wrap(dek)
    assert wrapped.provider == provider.name
    assert wrapped.kek_id == first_kek
    assert dek not in wrapped.blob
    assert provider.unwrap(wrapped) == dek
    assert (provider.wrap(dek).blob != wrapped.blob) is randomised

    second_kek = provider.new_kek()
    assert provider.current_kek() == second_kek
    rewrapped = provider.wrap(dek)
    assert rewrapped.kek_id == second_kek
    assert provider.unwrap(rewrapped) == dek
    assert provider.unwrap(wrapped) == dek  # wrapped under the old KEK: still readable
    assert provider.unwrap(provider.wrap(dek, first_kek)) == dek  # explicit old KEK

    damaged = bytearray(wrapped.blob)
    damaged[len(damaged) // 2] ^= 0x01
    for blob in (bytes(damaged), wrapped.blob[:-1], wrapped.blob + b"\x00"):
        with pytest.raises(DecryptionError) as info:
            provider.unwrap(dataclasses.replace(wrapped, blob=blob))
        assert info.value.reason == "unwrap_failed"
    assert provider.unwrap(wrapped) == dek  # and the provider is still usable


def check_keyring(provider: KeyProvider) -> None:
    """The full path on this provider: create, encrypt, rotate DEK and KEK, decrypt."""
    keyring = Keyring(provider, MemoryKeyStore())
    cipher = FieldCipher(keyring)
    key_id = keyring.key_for("acme", "u1")
    old = cipher.encrypt("before", CTX, key_id=key_id)
    keyring.rotate(key_id)
    new = cipher.encrypt("after", CTX, key_id=key_id)
    provider.new_kek()
    assert keyring.rewrap(key_id) == 2
    keyring.cache.clear()
    assert cipher.decrypt(old, CTX) == "before"
    assert cipher.decrypt(new, CTX) == "after"

"""Fixtures for the crypto tests: a local key provider in a temp dir, a keyring, a clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram.crypto import DataKeyCache, FieldCipher, Keyring, MemoryKeyStore
from engram.crypto.providers import LocalKeyProvider


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def local(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path / "keys" / "kek.json")


@pytest.fixture
def keyring(local: LocalKeyProvider, clock: Clock) -> Keyring:
    cache = DataKeyCache(ttl_s=60, max_entries=100, clock=clock)
    return Keyring(local, MemoryKeyStore(), cache=cache, clock=clock)


@pytest.fixture
def cipher(keyring: Keyring) -> FieldCipher:
    return FieldCipher(keyring)

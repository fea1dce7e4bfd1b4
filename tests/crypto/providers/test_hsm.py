"""The pkcs11 key provider against a real SoftHSM2 token (Debian's softhsm2)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from engram.config import CryptoSettings, Pkcs11Settings
from engram.crypto.providers import build_provider
from engram.crypto.providers.hsm import Pkcs11KeyProvider
from engram.errors import ConfigError, DecryptionError, KeyUnavailableError

from .conftest import SoftHsm
from .contract import check_keyring, check_provider

# SoftHSM2 comes from apt (make test installs it), so make check leaves these out.
pytestmark = pytest.mark.integration


def _provider(hsm: SoftHsm, token: str, **kw: str) -> Pkcs11KeyProvider:
    return Pkcs11KeyProvider(library=hsm.library, token_label=token, pin=hsm.pin, **kw)


@pytest.mark.parametrize("mechanism", ["aes-key-wrap-pad", "aes-key-wrap", "aes-gcm"])
def test_contract_on_softhsm(softhsm: SoftHsm, mechanism: str) -> None:
    token = {"aes-gcm": "engram-gcm", "aes-key-wrap": "engram-b"}.get(mechanism, "engram-a")
    provider = _provider(softhsm, token, key_label=f"kek-{mechanism}", mechanism=mechanism)
    try:
        check_provider(provider, randomised=mechanism == "aes-gcm")
        check_keyring(provider)
    finally:
        provider.close()


def test_kek_lives_on_the_token_and_cannot_leave(softhsm: SoftHsm) -> None:
    provider = _provider(softhsm, "engram-a", key_label="sealed")
    label = provider.current_kek()
    provider.close()
    lib = pkcs11.lib(softhsm.library)
    with lib.get_token(token_label="engram-a").open(user_pin=softhsm.pin) as session:
        key = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=label)
        assert key[Attribute.SENSITIVE] is True and key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.TOKEN] is True  # persistent: survives restarts
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]


def test_a_new_process_finds_the_newest_kek(softhsm: SoftHsm) -> None:
    first = _provider(softhsm, "engram-b", key_label="restart")
    wrapped = first.wrap(os.urandom(32))
    newest = first.new_kek()
    first.close()
    again = _provider(softhsm, "engram-b", key_label="restart")
    assert again.current_kek() == newest == "restart-2"
    assert len(again.unwrap(wrapped)) == 32
    again.close()


def test_mechanism_is_read_from_the_blob(softhsm: SoftHsm) -> None:
    gcm = _provider(softhsm, "engram-a", key_label="mixed", mechanism="aes-gcm")
    wrapped = gcm.wrap(os.urandom(32))
    gcm.close()
    kwp = _provider(softhsm, "engram-a", key_label="mixed", mechanism="aes-key-wrap-pad")
    assert len(kwp.unwrap(wrapped)) == 32
    with pytest.raises(DecryptionError):
        kwp.unwrap(dataclasses.replace(wrapped, blob=b"\x09" + wrapped.blob[1:]))
    kwp.close()


def test_two_providers_share_one_login(softhsm: SoftHsm) -> None:
    a = _provider(softhsm, "engram-b", key_label="shared")
    b = _provider(softhsm, "engram-b", key_label="shared")
    wrapped = a.wrap(os.urandom(32))
    assert b.unwrap(wrapped) == a.unwrap(wrapped)
    a.close()
    assert len(b.unwrap(wrapped)) == 32
    b.close()


def test_wrong_pin_is_denied(softhsm: SoftHsm) -> None:
    provider = Pkcs11KeyProvider(library=softhsm.library, token_label="engram-pin", pin="0000")
    with pytest.raises(KeyUnavailableError) as info:
        provider.current_kek()
    assert info.value.reason == "denied" and info.value.status == 503


def test_missing_token_and_library_fail_fast(softhsm: SoftHsm) -> None:
    start = time.monotonic()
    with pytest.raises(KeyUnavailableError) as info:
        _provider(softhsm, "no-such-token").current_kek()
    assert info.value.reason == "misconfigured" and "no-such-token" in str(info.value)
    with pytest.raises(KeyUnavailableError) as info:
        Pkcs11KeyProvider(library="/nonexistent/libhsm.so", token_label="x", pin="1").wrap(
            b"k" * 32
        )
    assert "does not exist" in str(info.value)
    assert time.monotonic() - start < 2


def test_missing_kek_label_is_kek_missing(softhsm: SoftHsm) -> None:
    provider = _provider(softhsm, "engram-a", key_label="present")
    wrapped = provider.wrap(os.urandom(32))
    with pytest.raises(KeyUnavailableError) as info:
        provider.unwrap(dataclasses.replace(wrapped, kek_id="absent-1"))
    assert info.value.reason == "kek_missing"
    provider.close()


def test_built_from_settings(softhsm: SoftHsm) -> None:
    settings = CryptoSettings(
        provider="pkcs11",
        pkcs11=Pkcs11Settings(library=softhsm.library, token_label="engram-b", pin=softhsm.pin),
    )
    provider = build_provider(settings, data_dir=Path("/nonexistent"))
    assert isinstance(provider, Pkcs11KeyProvider)
    assert provider.current_kek() == "engram-kek-1"
    provider.close()
    with pytest.raises(ConfigError, match="library"):
        build_provider(CryptoSettings(provider="pkcs11"), data_dir=Path("/nonexistent"))

"""Contract tests: the azure-keyvault provider (the real azure-keyvault-keys SDK) against a
local HTTPS server speaking Key Vault's keys REST protocol (keyvault_server.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engram.config import AzureKeyVaultSettings, CryptoSettings
from engram.crypto.providers import build_provider
from engram.crypto.providers.azure_keyvault import AzureKeyVaultKeyProvider, StaticTokenCredential
from engram.errors import ConfigError, DecryptionError, KeyUnavailableError

from .conftest import free_port
from .contract import check_keyring, check_provider
from .keyvault_server import FakeKeyVault, run_keyvault

TOKEN = "eyJ0eXAiOiJKV1QifQ.test.token"


@pytest.fixture
def keyvault(tmp_path: Path) -> Iterator[FakeKeyVault]:
    with run_keyvault(tmp_path, TOKEN) as state:
        state.create("engram-kek")
        yield state


def _provider(kv: FakeKeyVault, token: str = TOKEN, **kw: object) -> AzureKeyVaultKeyProvider:
    return AzureKeyVaultKeyProvider(
        vault_url=kv.url,
        key_name="engram-kek",
        credential=StaticTokenCredential(token),
        verify_challenge_resource=False,  # the vault is 127.0.0.1, not *.vault.azure.net
        ca_file=kv.ca_file,
        **kw,  # type: ignore[arg-type]
    )


def test_contract(keyvault: FakeKeyVault) -> None:
    provider = _provider(keyvault)
    check_provider(provider)
    check_keyring(provider)
    provider.close()
    assert keyvault.challenges == 1  # the SDK's first, bodiless request; then the token
    posts = [p for m, p in keyvault.calls if m == "POST"]
    assert any(p.endswith("/unwrapkey") for p in posts)
    assert any(p.endswith("/rotate") for p in posts)


def test_kek_ids_are_versioned_key_ids(keyvault: FakeKeyVault) -> None:
    provider = _provider(keyvault)
    first = provider.current_kek()
    assert (
        first.startswith(f"{keyvault.url}/keys/engram-kek/") and len(first.rsplit("/", 1)[1]) == 32
    )
    wrapped = provider.wrap(os.urandom(32))
    assert wrapped.kek_id == first and wrapped.blob[0] == 1  # RSA-OAEP-256
    assert len(wrapped.blob) == 1 + 256  # a 2048-bit RSA block
    provider.close()


def test_without_get_permission_wrap_happens_in_the_vault(keyvault: FakeKeyVault) -> None:
    keyvault.allow_get = False
    version = keyvault.keys["engram-kek"].order[-1]
    provider = _provider(keyvault, key_version=version)
    dek = os.urandom(32)
    wrapped = provider.wrap(dek)
    assert provider.unwrap(wrapped) == dek
    assert ("POST", f"/keys/engram-kek/{version}/wrapkey") in keyvault.calls
    with pytest.raises(ConfigError, match="key_version"):
        provider.new_kek()
    provider.close()


def test_rsa_oaep_sha1_is_supported(keyvault: FakeKeyVault) -> None:
    provider = _provider(keyvault, algorithm="RSA-OAEP")
    dek = os.urandom(32)
    wrapped = provider.wrap(dek)
    assert wrapped.blob[0] == 2 and provider.unwrap(wrapped) == dek
    provider.close()


def test_bad_token_is_denied(keyvault: FakeKeyVault) -> None:
    provider = _provider(keyvault, token="not-the-token")
    with pytest.raises(KeyUnavailableError) as info:
        provider.current_kek()
    assert info.value.reason == "denied" and info.value.status == 503
    provider.close()


def test_a_missing_key_is_kek_missing(keyvault: FakeKeyVault) -> None:
    provider = _provider(keyvault)
    wrapped = provider.wrap(os.urandom(32))
    del keyvault.keys["engram-kek"]
    with pytest.raises(KeyUnavailableError) as info:
        provider.unwrap(wrapped)
    assert info.value.reason == "kek_missing" and "KeyNotFound" in str(info.value)
    provider.close()


def test_a_damaged_wrapped_key_is_a_decryption_error(keyvault: FakeKeyVault) -> None:
    provider = _provider(keyvault)
    wrapped = provider.wrap(os.urandom(32))
    with pytest.raises(DecryptionError):
        provider.unwrap(type(wrapped)(wrapped.provider, wrapped.kek_id, b"\x07" + wrapped.blob[1:]))
    provider.close()


def test_untrusted_certificate_is_refused(keyvault: FakeKeyVault) -> None:
    provider = AzureKeyVaultKeyProvider(
        vault_url=keyvault.url,
        key_name="engram-kek",
        credential=StaticTokenCredential(TOKEN),
        verify_challenge_resource=False,
        retries=0,
    )
    with pytest.raises(KeyUnavailableError) as info:
        provider.current_kek()
    assert info.value.reason == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    provider.close()


def test_unreachable_vault_fails_fast_with_503(tmp_path: Path) -> None:
    provider = AzureKeyVaultKeyProvider(
        vault_url=f"https://127.0.0.1:{free_port()}",
        key_name="k",
        credential=StaticTokenCredential(TOKEN),
        verify_challenge_resource=False,
        timeout_s=1,
        retries=1,
    )
    start = time.monotonic()
    with pytest.raises(KeyUnavailableError) as info:
        provider.current_kek()
    assert time.monotonic() - start < 5
    assert info.value.reason == "unreachable" and "cannot reach" in str(info.value)
    provider.close()


def test_settings_need_a_vault_url() -> None:
    with pytest.raises(ConfigError, match="vault_url"):
        build_provider(
            CryptoSettings(provider="azure-keyvault", azure=AzureKeyVaultSettings()),
            data_dir=Path("/nonexistent"),
        )

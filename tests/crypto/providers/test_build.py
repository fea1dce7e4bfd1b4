"""Settings choose and configure the key provider; missing pieces are named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engram.config import CryptoSettings, load_settings
from engram.crypto import MemoryKeyStore, build_keyring
from engram.crypto.providers import LocalKeyProvider, build_provider
from engram.errors import ConfigError


def test_crypto_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENGRAM_CONFIG", "ENGRAM_CRYPTO__PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    c = load_settings().crypto
    assert c.enabled and c.provider == "local"
    assert c.protect == ["pii", "phi", "secret"] and not c.embed_plaintext
    assert c.dek_cache_ttl_s == 300 and c.dek_cache_max == 10_000


def test_crypto_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_CRYPTO__PROVIDER", "vault-transit")
    monkeypatch.setenv("ENGRAM_CRYPTO__VAULT__URL", "https://vault.internal:8200")
    monkeypatch.setenv("ENGRAM_CRYPTO__VAULT__TOKEN", "hvs.x")
    monkeypatch.setenv("ENGRAM_CRYPTO__DEK_CACHE_TTL_S", "30")
    c = load_settings().crypto
    assert c.provider == "vault-transit" and c.vault.url == "https://vault.internal:8200"
    assert c.vault.token is not None and c.vault.token.get_secret_value() == "hvs.x"
    assert "hvs.x" not in repr(c)
    assert c.dek_cache_ttl_s == 30
    monkeypatch.setenv("ENGRAM_CRYPTO__PROVIDER", "gcp-kms")
    with pytest.raises(ConfigError, match="provider"):
        load_settings()


def test_local_is_the_default_under_the_data_dir(tmp_path: Path) -> None:
    provider = build_provider(CryptoSettings(), tmp_path)
    assert isinstance(provider, LocalKeyProvider)
    assert provider.path == tmp_path / "keys" / "kek.json"
    explicit = CryptoSettings.model_validate({"local": {"key_file": str(tmp_path / "k.json")}})
    assert build_provider(explicit, tmp_path).describe()["key_file"] == str(tmp_path / "k.json")


def test_build_keyring_uses_the_cache_settings(tmp_path: Path) -> None:
    settings = CryptoSettings(dek_cache_ttl_s=12, dek_cache_max=3)
    keyring = build_keyring(settings, tmp_path, MemoryKeyStore())
    assert (keyring.cache.ttl_s, keyring.cache.max_entries) == (12, 3)
    key_id = keyring.key_for("acme")
    assert keyring.encryption_key(key_id).version == 1
    assert (tmp_path / "keys" / "kek.json").exists()


def test_a_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "engram.crypto.providers.aws_kms", raising=False)
    with pytest.raises(ConfigError) as info:
        build_provider(CryptoSettings(provider="aws-kms"), Path("/nonexistent"))
    assert "engram-memory[aws]" in str(info.value)

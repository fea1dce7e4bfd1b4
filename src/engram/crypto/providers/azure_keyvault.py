"""The `azure-keyvault` key provider: an RSA key in Azure Key Vault wraps the data keys.

Uses `azure-keyvault-keys`' CryptographyClient (``wrapKey``/``unwrapKey``; the SDK may wrap
locally with the public key it fetched, unwrap always happens in the vault). The KEK id
is the versioned key id (``https://<vault>/keys/<name>/<version>``), so data keys unwrap
after a rotation. A new KEK is ``rotate_key`` (a new version of the same key). Wrapped
blob: 1 byte algorithm (1 RSA-OAEP-256, 2 RSA-OAEP), then the wrapped key.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from engram.crypto.providers.base import WrappedDek
from engram.errors import ConfigError, DecryptionError, KeyUnavailableError

__all__ = ["AzureKeyVaultKeyProvider", "StaticTokenCredential"]

logger = logging.getLogger(__name__)

ALGORITHMS = {"RSA-OAEP-256": 1, "RSA-OAEP": 2}
_BY_CODE = {code: KeyWrapAlgorithm(name) for name, code in ALGORITHMS.items()}


class StaticTokenCredential:
    """A TokenCredential that always returns one bearer token (obtained elsewhere)."""

    def __init__(self, token: str, *, lifetime_s: int = 3600) -> None:
        self._token = token
        self._lifetime_s = lifetime_s

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime_s)


class AzureKeyVaultKeyProvider:
    name = "azure-keyvault"
    in_process = False

    def __init__(
        self,
        *,
        vault_url: str,
        key_name: str,
        credential: TokenCredential,
        key_version: str | None = None,
        algorithm: str = "RSA-OAEP-256",
        verify_challenge_resource: bool = True,
        ca_file: Path | None = None,
        timeout_s: float = 5.0,
        retries: int = 1,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown wrap algorithm {algorithm!r}")
        self.vault_url = vault_url.rstrip("/")
        self.key_name = key_name
        self.key_version = key_version
        self.algorithm = algorithm
        self._credential = credential
        self._options: dict[str, Any] = {
            "verify_challenge_resource": verify_challenge_resource,
            "retry_total": retries,
            "retry_backoff_factor": 0.2,
            "connection_timeout": timeout_s,
            "read_timeout": timeout_s,
        }
        if ca_file is not None:
            self._options["connection_verify"] = str(ca_file)
        self._keys = KeyClient(self.vault_url, credential, **self._options)
        self._crypto: dict[str, CryptographyClient] = {}
        self._current: str | None = None
        self._lock = threading.Lock()

    def _fail(self, message: str, reason: str, hint: str | None = None) -> KeyUnavailableError:
        return KeyUnavailableError(message, provider=self.name, reason=reason, hint=hint)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ClientAuthenticationError as exc:
            raise self._fail(
                f"{what}: {exc.message}", "denied", hint="check the Azure credential and its role"
            ) from exc
        except HttpResponseError as exc:
            status = exc.status_code or 0
            message = f"{what}: Key Vault answered {status}: {exc.message}"
            if status in (401, 403):
                raise self._fail(message, "denied", hint="grant wrapKey/unwrapKey/get") from exc
            if status == 404:
                raise self._fail(message, "kek_missing") from exc
            if status == 400 and "unwrap" in what:
                raise DecryptionError(
                    message,
                    reason="unwrap_failed",
                    hint="the stored data key is damaged; restore the key table from a backup",
                ) from None
            reason = "misconfigured" if 400 <= status < 500 and status != 429 else "server_error"
            raise self._fail(message, reason) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._fail(
                f"{what}: cannot reach {self.vault_url} ({exc})", "unreachable"
            ) from exc

    def _client(self, kek_id: str) -> CryptographyClient:
        with self._lock:
            client = self._crypto.get(kek_id)
            if client is None:
                client = CryptographyClient(kek_id, self._credential, **self._options)
                self._crypto[kek_id] = client
            return client

    def current_kek(self) -> str:
        with self._lock:
            if self._current is None:
                if self.key_version:
                    self._current = f"{self.vault_url}/keys/{self.key_name}/{self.key_version}"
                else:
                    key = self._call(f"get key {self.key_name}", self._keys.get_key, self.key_name)
                    self._current = str(key.id)
            return self._current

    def wrap(self, plaintext_dek: bytes, kek_id: str | None = None) -> WrappedDek:
        kek_id = kek_id or self.current_kek()
        algorithm = KeyWrapAlgorithm(self.algorithm)
        client = self._client(kek_id)
        result = self._call(f"wrap with {kek_id}", client.wrap_key, algorithm, plaintext_dek)
        blob = bytes([ALGORITHMS[self.algorithm]]) + bytes(result.encrypted_key)
        return WrappedDek(self.name, kek_id, blob)

    def unwrap(self, wrapped: WrappedDek) -> bytes:
        blob = wrapped.blob
        if not blob or blob[0] not in _BY_CODE:
            raise DecryptionError(
                f"wrapped data key under {wrapped.kek_id} names no known algorithm",
                reason="unwrap_failed",
                hint="the stored data key is damaged; restore the key table from a backup",
            )
        client = self._client(wrapped.kek_id)
        result = self._call(
            f"unwrap with {wrapped.kek_id}", client.unwrap_key, _BY_CODE[blob[0]], blob[1:]
        )
        return bytes(result.key)

    def new_kek(self) -> str:
        if self.key_version:
            raise ConfigError(
                f"crypto.azure.key_version pins {self.key_name} to version {self.key_version}",
                hint="unset key_version to rotate, or rotate in Key Vault and pin the new one",
            )
        key = self._call(f"rotate key {self.key_name}", self._keys.rotate_key, self.key_name)
        with self._lock:
            self._current = str(key.id)
        logger.info("rotated Key Vault key to %s", key.id)
        return str(key.id)

    def describe(self) -> dict[str, str]:
        return {
            "provider": self.name,
            "vault_url": self.vault_url,
            "key": self.key_name,
            "algorithm": self.algorithm,
        }

    def close(self) -> None:
        self._keys.close()
        for client in self._crypto.values():
            client.close()

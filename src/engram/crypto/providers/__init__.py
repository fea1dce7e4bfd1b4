"""Key providers: where key-encryption keys live. One protocol, five implementations.

Only `local` needs nothing beyond Engram's own dependencies; the others import their
SDK when built (extras ``engram-memory[aws]``, ``[azure]``, ``[pkcs11]``).
"""

from __future__ import annotations

from pathlib import Path

from engram.config import CryptoSettings
from engram.crypto.providers.base import KeyProvider, WrappedDek
from engram.crypto.providers.local import LocalKeyProvider
from engram.errors import ConfigError

__all__ = ["KeyProvider", "LocalKeyProvider", "WrappedDek", "build_provider"]


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get is not None else None


def build_provider(settings: CryptoSettings, data_dir: Path) -> KeyProvider:
    """The key provider `settings.provider` names, configured; ConfigError if incomplete."""
    kind = settings.provider
    try:
        if kind == "local":
            return LocalKeyProvider(settings.local.key_file or data_dir / "keys" / "kek.json")
        if kind == "pkcs11":
            from engram.crypto.providers.hsm import Pkcs11KeyProvider

            p = settings.pkcs11
            if p.library is None:
                raise ConfigError(
                    "crypto.pkcs11.library is not set", hint="give the HSM's PKCS#11 .so path"
                )
            return Pkcs11KeyProvider(
                library=str(p.library),
                token_label=p.token_label,
                pin=_secret(p.pin),
                key_label=p.key_label,
                mechanism=p.mechanism,
            )
        if kind == "aws-kms":
            from engram.crypto.providers.aws_kms import AwsKmsKeyProvider

            a = settings.aws_kms
            return AwsKmsKeyProvider(
                key_id=a.key_id,
                region=a.region,
                endpoint_url=a.endpoint_url,
                access_key_id=_secret(a.access_key_id),
                secret_access_key=_secret(a.secret_access_key),
                timeout_s=a.timeout_s,
                max_attempts=a.max_attempts,
            )
        if kind == "vault-transit":
            from engram.crypto.providers.vault_transit import VaultTransitKeyProvider

            v = settings.vault
            return VaultTransitKeyProvider(
                url=v.url,
                token=_secret(v.token),
                key_name=v.key_name,
                mount=v.mount,
                namespace=v.namespace,
                ca_file=v.ca_file,
                timeout_s=v.timeout_s,
                retries=v.retries,
            )
        if kind == "azure-keyvault":
            return _azure(settings)
    except ImportError as exc:
        extra = {"pkcs11": "pkcs11", "aws-kms": "aws", "azure-keyvault": "azure"}.get(kind, "")
        raise ConfigError(
            f"key provider {kind!r} needs a package that is not installed ({exc.name})",
            hint=f"pip install 'engram-memory[{extra}]'",
        ) from exc
    raise ConfigError(f"unknown key provider {kind!r}")


def _azure(settings: CryptoSettings) -> KeyProvider:
    from azure.core.credentials import TokenCredential

    from engram.crypto.providers.azure_keyvault import AzureKeyVaultKeyProvider

    z = settings.azure
    if not z.vault_url:
        raise ConfigError(
            "crypto.azure.vault_url is not set", hint="e.g. https://<name>.vault.azure.net"
        )
    credential: TokenCredential
    secret = _secret(z.client_secret)
    if z.tenant_id and z.client_id and secret:
        from azure.identity import ClientSecretCredential

        credential = ClientSecretCredential(z.tenant_id, z.client_id, secret)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return AzureKeyVaultKeyProvider(
        vault_url=z.vault_url,
        key_name=z.key_name,
        key_version=z.key_version,
        credential=credential,
        algorithm=z.algorithm,
        verify_challenge_resource=z.verify_challenge_resource,
        ca_file=z.ca_file,
        timeout_s=z.timeout_s,
        retries=z.retries,
    )

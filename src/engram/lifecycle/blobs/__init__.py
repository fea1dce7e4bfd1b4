"""Blob stores for archives: `local` directory, Azure Blob Storage, S3."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from engram.config import BlobSettings
from engram.lifecycle.blobs.base import BlobStore, delete_prefix, key_part

__all__ = ["BlobStore", "build_blob_store", "delete_prefix", "key_part"]


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_blob_store(settings: BlobSettings, data_dir: Path) -> BlobStore:
    """The configured store (``local``: ``path`` or ``<data_dir>/archives``)."""
    if settings.kind == "azure":
        from engram.lifecycle.blobs.azure import AzureBlobStore

        return AzureBlobStore(
            settings.container,
            connection_string=_secret(settings.azure_connection_string),
            account_url=settings.azure_account_url,
            timeout_s=settings.timeout_s,
        )
    if settings.kind == "s3":
        from engram.lifecycle.blobs.s3 import S3BlobStore

        return S3BlobStore(
            settings.container,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=_secret(settings.s3_access_key_id),
            secret_access_key=_secret(settings.s3_secret_access_key),
            timeout_s=settings.timeout_s,
        )
    from engram.lifecycle.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.path or Path(data_dir).expanduser() / "archives")

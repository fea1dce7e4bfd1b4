"""Archives in Azure Blob Storage (or Azurite) through azure-storage-blob."""

from __future__ import annotations

from typing import Any

from engram.errors import NotFoundError, UnavailableError

__all__ = ["AzureBlobStore"]

_HINT = "check lifecycle.blob.azure_* settings and that the storage account is reachable"


class AzureBlobStore:
    """One container; the container is created on first use if it does not exist."""

    name = "azure"

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        try:
            from azure.core.exceptions import AzureError, ResourceExistsError
            from azure.storage.blob import BlobServiceClient
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UnavailableError(
                "the Azure blob store needs azure-storage-blob",
                hint="pip install 'engram-memory[azure]'",
            ) from exc
        self._errors: tuple[type[BaseException], ...] = (AzureError,)
        kwargs: dict[str, Any] = {"connection_timeout": timeout_s, "read_timeout": timeout_s}
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string, **kwargs)
        elif account_url:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(account_url, DefaultAzureCredential(), **kwargs)
        else:
            raise UnavailableError(
                "the Azure blob store needs a connection string or an account URL",
                hint="set lifecycle.blob.azure_connection_string or azure_account_url",
            )
        self._container = service.get_container_client(container)
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise UnavailableError(
                f"Azure blob container {container!r}: {exc}", hint=_HINT
            ) from exc

    def put(self, key: str, data: bytes) -> None:
        try:
            self._container.upload_blob(key, data, overwrite=True)
        except self._errors as exc:
            raise UnavailableError(f"Azure upload of {key!r} failed: {exc}", hint=_HINT) from exc

    def get(self, key: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self._container.download_blob(key).readall())
        except ResourceNotFoundError:
            raise NotFoundError("archive object", key) from None
        except self._errors as exc:
            raise UnavailableError(f"Azure download of {key!r} failed: {exc}", hint=_HINT) from exc

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(b.name for b in self._container.list_blobs(name_starts_with=prefix))
        except self._errors as exc:
            raise UnavailableError(
                f"Azure listing of {prefix!r} failed: {exc}", hint=_HINT
            ) from exc

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._container.delete_blob(key)
        except ResourceNotFoundError:
            pass
        except self._errors as exc:
            raise UnavailableError(f"Azure delete of {key!r} failed: {exc}", hint=_HINT) from exc

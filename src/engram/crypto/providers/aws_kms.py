"""The `aws-kms` key provider: data keys wrapped by KMS Encrypt/Decrypt under a symmetric key.

The configured key id may be a key id, an ARN or an alias. The KEK id stored with each
wrapped key is the ARN KMS reports, so it unwraps after an alias moved on. A new KEK:
for an alias, a new KMS key the alias is pointed at; for a key, KMS on-demand rotation
(new backing material, same ARN). Each call carries the encryption context
``{"engram": "data-key"}``, so KMS refuses ciphertexts made for other purposes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from engram.crypto.providers.base import WrappedDek
from engram.errors import DecryptionError, KeyUnavailableError

__all__ = ["AwsKmsKeyProvider"]

logger = logging.getLogger(__name__)

_CONTEXT = {"engram": "data-key"}
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"}
_MISSING = {"NotFoundException", "DisabledException", "KMSInvalidStateException"}
_BAD_BLOB = {"InvalidCiphertextException", "IncorrectKeyException"}


class AwsKmsKeyProvider:
    name = "aws-kms"
    in_process = False

    def __init__(
        self,
        *,
        key_id: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.key_id = key_id
        self.endpoint_url = endpoint_url
        self.region = region
        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
        )
        self._client: Any = boto3.session.Session().client(
            "kms",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        self._current: str | None = None
        self._lock = threading.Lock()

    def _call(self, what: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._client, operation)(**kwargs)
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message") or code
            if code in _BAD_BLOB:
                raise DecryptionError(
                    f"KMS refused the wrapped data key ({code})",
                    reason="unwrap_failed",
                    hint="the stored data key is damaged, or was wrapped in another account",
                ) from None
            reason = (
                "denied"
                if code in _DENIED
                else "kek_missing"
                if code in _MISSING
                else "server_error"
            )
            raise self._fail(f"{what}: {code}: {message}", reason) from exc
        except NoCredentialsError as exc:
            raise self._fail(
                f"{what}: no AWS credentials",
                "denied",
                hint="set crypto.aws_kms.access_key_id/secret_access_key or AWS_* variables",
            ) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise self._fail(f"{what}: {exc}", "timeout") from exc
        except EndpointConnectionError as exc:
            raise self._fail(f"{what}: {exc}", "unreachable") from exc
        except BotoCoreError as exc:
            raise self._fail(f"{what}: {exc}", "unreachable") from exc

    def _fail(self, message: str, reason: str, hint: str | None = None) -> KeyUnavailableError:
        return KeyUnavailableError(message, provider=self.name, reason=reason, hint=hint)

    def current_kek(self) -> str:
        with self._lock:
            if self._current is None:
                meta = self._call("describe the KEK", "describe_key", KeyId=self.key_id)
                self._current = str(meta["KeyMetadata"]["Arn"])
            return self._current

    def wrap(self, plaintext_dek: bytes, kek_id: str | None = None) -> WrappedDek:
        kek_id = kek_id or self.current_kek()
        out = self._call(
            f"encrypt under {kek_id}",
            "encrypt",
            KeyId=kek_id,
            Plaintext=plaintext_dek,
            EncryptionContext=_CONTEXT,
        )
        return WrappedDek(self.name, str(out["KeyId"]), bytes(out["CiphertextBlob"]))

    def unwrap(self, wrapped: WrappedDek) -> bytes:
        out = self._call(
            f"decrypt under {wrapped.kek_id}",
            "decrypt",
            KeyId=wrapped.kek_id,
            CiphertextBlob=wrapped.blob,
            EncryptionContext=_CONTEXT,
        )
        return bytes(out["Plaintext"])

    def new_kek(self) -> str:
        with self._lock:
            if self.key_id.startswith("alias/"):
                meta = self._call(
                    "create a KMS key",
                    "create_key",
                    Description="Engram key-encryption key",
                    KeyUsage="ENCRYPT_DECRYPT",
                    KeySpec="SYMMETRIC_DEFAULT",
                )["KeyMetadata"]
                self._call(
                    f"point {self.key_id} at the new key",
                    "update_alias",
                    AliasName=self.key_id,
                    TargetKeyId=meta["KeyId"],
                )
                self._current = str(meta["Arn"])
            else:
                self._call("rotate the KMS key", "rotate_key_on_demand", KeyId=self.key_id)
                self._current = None
        logger.info("new KEK for %s", self.key_id)
        return self.current_kek()

    def describe(self) -> dict[str, str]:
        out = {"provider": self.name, "key_id": self.key_id}
        if self.region:
            out["region"] = self.region
        if self.endpoint_url:
            out["endpoint_url"] = self.endpoint_url
        return out

    def close(self) -> None:
        self._client.close()

"""Archives in Amazon S3 or any S3-compatible server, through boto3."""

from __future__ import annotations

from typing import Any

from engram.errors import NotFoundError, UnavailableError

__all__ = ["S3BlobStore"]

_HINT = "check lifecycle.blob.s3_* settings and that the S3 endpoint is reachable"


class S3BlobStore:
    """One bucket; it is created on first use if it does not exist."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UnavailableError(
                "the S3 blob store needs boto3", hint="pip install 'engram-memory[aws]'"
            ) from exc
        self._client_error = ClientError
        self._errors: tuple[type[BaseException], ...] = (BotoCoreError, ClientError)
        self.bucket = bucket
        self._s3: Any = boto3.client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(connect_timeout=timeout_s, read_timeout=timeout_s),
        )
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError:
            try:
                extra = (
                    {"CreateBucketConfiguration": {"LocationConstraint": region}}
                    if region and region != "us-east-1"
                    else {}
                )
                self._s3.create_bucket(Bucket=bucket, **extra)
            except self._errors as exc:
                raise UnavailableError(f"S3 bucket {bucket!r}: {exc}", hint=_HINT) from exc
        except BotoCoreError as exc:
            raise UnavailableError(f"S3 bucket {bucket!r}: {exc}", hint=_HINT) from exc

    def put(self, key: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except self._errors as exc:
            raise UnavailableError(f"S3 upload of {key!r} failed: {exc}", hint=_HINT) from exc

    def get(self, key: str) -> bytes:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except self._client_error as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFoundError("archive object", key) from None
            raise UnavailableError(f"S3 download of {key!r} failed: {exc}", hint=_HINT) from exc
        except self._errors as exc:
            raise UnavailableError(f"S3 download of {key!r} failed: {exc}", hint=_HINT) from exc

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except self._errors as exc:
            raise UnavailableError(f"S3 listing of {prefix!r} failed: {exc}", hint=_HINT) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=key)  # absent keys: no error
        except self._errors as exc:
            raise UnavailableError(f"S3 delete of {key!r} failed: {exc}", hint=_HINT) from exc

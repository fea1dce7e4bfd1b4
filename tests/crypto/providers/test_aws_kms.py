"""The aws-kms key provider against moto's KMS in server mode (`moto_server`)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import SecretStr

from engram.config import AwsKmsSettings, CryptoSettings
from engram.crypto.providers import WrappedDek, build_provider
from engram.crypto.providers.aws_kms import AwsKmsKeyProvider
from engram.errors import DecryptionError, KeyUnavailableError

from .conftest import free_port
from .contract import check_keyring, check_provider

CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def kms(moto_kms: str) -> Iterator[Any]:
    client = boto3.client("kms", endpoint_url=moto_kms, region_name="eu-west-1", **CREDS)
    yield client
    client.close()


def _alias(kms: Any) -> str:
    key = kms.create_key(Description="engram test KEK")["KeyMetadata"]
    alias = f"alias/engram-{os.urandom(4).hex()}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    return alias


def _provider(endpoint: str, key_id: str, **kw: Any) -> AwsKmsKeyProvider:
    return AwsKmsKeyProvider(
        key_id=key_id,
        region="eu-west-1",
        endpoint_url=endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        **kw,
    )


def test_contract_with_an_alias(moto_kms: str, kms: Any) -> None:
    alias = _alias(kms)
    provider = _provider(moto_kms, alias)
    first = provider.current_kek()
    assert first.startswith("arn:aws:kms:eu-west-1:")
    check_provider(provider)
    # The new KEK is a new KMS key, and the alias now points at it.
    target = kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    assert target == provider.current_kek() != first
    check_keyring(provider)
    provider.close()


def test_contract_with_a_key_id_uses_on_demand_rotation(moto_kms: str, kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    provider = _provider(moto_kms, key_id)
    arn = provider.current_kek()
    wrapped = provider.wrap(os.urandom(32))
    assert provider.new_kek() == arn  # same key, new backing material
    assert len(provider.unwrap(wrapped)) == 32
    provider.close()


def test_encryption_context_is_enforced(moto_kms: str, kms: Any) -> None:
    provider = _provider(moto_kms, _alias(kms))
    wrapped = provider.wrap(os.urandom(32))
    # The same blob decrypted without Engram's context is refused by KMS.
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=wrapped.blob)
    provider.close()


@pytest.mark.parametrize(
    ("code", "error", "reason"),
    [
        ("DisabledException", KeyUnavailableError, "kek_missing"),
        ("KMSInvalidStateException", KeyUnavailableError, "kek_missing"),
        ("AccessDeniedException", KeyUnavailableError, "denied"),
        ("ThrottlingException", KeyUnavailableError, "server_error"),
        ("InvalidCiphertextException", DecryptionError, "unwrap_failed"),
        ("IncorrectKeyException", DecryptionError, "unwrap_failed"),
    ],
)
def test_kms_error_codes_map_to_engram_errors(
    moto_kms: str, code: str, error: type[Exception], reason: str
) -> None:
    # moto does not enforce key states or IAM, so these answers are stubbed as AWS sends them.
    provider = _provider(moto_kms, "alias/x", max_attempts=1)
    wrapped = WrappedDek("aws-kms", "arn:aws:kms:eu-west-1:123456789012:key/k", b"blob")
    with Stubber(provider._client) as stub:
        stub.add_client_error("decrypt", service_error_code=code, service_message="said no")
        with pytest.raises(error) as info:
            provider.unwrap(wrapped)
    assert getattr(info.value, "reason", None) == reason
    provider.close()


def test_a_missing_key_is_kek_missing(moto_kms: str) -> None:
    provider = _provider(moto_kms, "alias/does-not-exist")
    with pytest.raises(KeyUnavailableError) as info:
        provider.current_kek()
    assert info.value.reason == "kek_missing" and "NotFoundException" in str(info.value)
    provider.close()


def test_unreachable_kms_fails_fast_with_503() -> None:
    provider = _provider(f"http://127.0.0.1:{free_port()}", "alias/x", timeout_s=1, max_attempts=2)
    start = time.monotonic()
    with pytest.raises(KeyUnavailableError) as info:
        provider.wrap(os.urandom(32), "arn:aws:kms:eu-west-1:123456789012:key/x")
    assert time.monotonic() - start < 5
    assert info.value.status == 503 and info.value.reason == "unreachable"
    assert "Could not connect" in str(info.value)
    provider.close()


def test_built_from_settings(moto_kms: str, kms: Any) -> None:
    alias = _alias(kms)
    settings = CryptoSettings(
        provider="aws-kms",
        aws_kms=AwsKmsSettings(
            key_id=alias,
            region="eu-west-1",
            endpoint_url=moto_kms,
            access_key_id=SecretStr("testing"),
            secret_access_key=SecretStr("testing"),
        ),
    )
    provider = build_provider(settings, data_dir=Path("/nonexistent"))
    assert isinstance(provider, AwsKmsKeyProvider)
    wrapped = provider.wrap(os.urandom(32))
    assert len(provider.unwrap(dataclasses.replace(wrapped))) == 32
    provider.close()

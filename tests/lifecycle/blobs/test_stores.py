"""The one blob-store contract, against a directory, real Azurite and moto's real S3 server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from engram.config import BlobSettings
from engram.errors import NotFoundError, UnavailableError, ValidationError
from engram.lifecycle.blobs import BlobStore, build_blob_store, delete_prefix, key_part
from engram.lifecycle.blobs.local import LocalBlobStore
from tests.fix_blobs import S3_CREDS

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "azure", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    container = f"t{secrets.token_hex(6)}"
    if request.param == "local":
        settings = BlobSettings(kind="local", path=tmp_path / "archives")
    elif request.param == "azure":
        conn = request.getfixturevalue("azurite")
        settings = BlobSettings(kind="azure", container=container, azure_connection_string=conn)
    else:
        url = request.getfixturevalue("moto_s3")
        settings = BlobSettings(
            kind="s3",
            container=container,
            s3_endpoint_url=url,
            s3_region="us-east-1",
            s3_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
            s3_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
        )
    yield build_blob_store(settings, tmp_path)


def test_put_get_list_delete_round_trip(store: BlobStore) -> None:
    payload = os.urandom(200_000)  # binary, several blocks
    store.put("t/u-ada/s-1/a/messages.jsonl.gz", payload)
    store.put("t/u-ada/s-1/a/manifest.json", b"{}")
    store.put("t/u-bob/s-2/b/manifest.json", b"{}")
    assert store.get("t/u-ada/s-1/a/messages.jsonl.gz") == payload
    assert store.list("t/u-ada/") == [
        "t/u-ada/s-1/a/manifest.json",
        "t/u-ada/s-1/a/messages.jsonl.gz",
    ]
    store.put("t/u-ada/s-1/a/manifest.json", b'{"v": 2}')  # overwrite
    assert store.get("t/u-ada/s-1/a/manifest.json") == b'{"v": 2}'
    assert delete_prefix(store, "t/u-ada/") == 2
    assert store.list("t/u-ada/") == []
    assert store.list("t/") == ["t/u-bob/s-2/b/manifest.json"]
    store.delete("t/u-ada/s-1/a/manifest.json")  # deleting twice is not an error
    with pytest.raises(NotFoundError):
        store.get("t/u-ada/s-1/a/manifest.json")


def test_key_parts_cannot_escape_or_collide(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "a")
    for hostile in ("..", ".", "a/../../x", "", "ü ß/%"):
        part = key_part(hostile)
        assert "/" not in part and part not in (".", "..", "")
        store.put(f"{part}/x", b"1")
    assert len(store.list("")) == 5
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValidationError):
        store.put("../escape", b"1")


def test_unreachable_store_says_what_to_check(tmp_path: Path) -> None:
    settings = BlobSettings(
        kind="s3",
        container="b",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_region="us-east-1",
        s3_access_key_id="x",
        s3_secret_access_key="y",
        timeout_s=1,
    )
    with pytest.raises(UnavailableError) as err:
        build_blob_store(settings, tmp_path)
    assert "s3" in (err.value.hint or "")

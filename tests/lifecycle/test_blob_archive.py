"""Archive and restore through Azurite and moto's S3, and refuse an altered archive."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from engram.config import BlobSettings
from engram.lifecycle.archive import ArchiveError, archive_session, restore_session
from engram.lifecycle.blobs import BlobStore, build_blob_store
from engram.store.db import Database
from tests.fix_blobs import S3_CREDS
from tests.fix_server import Server
from tests.lifecycle.conftest import conversation, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _store(request: pytest.FixtureRequest, kind: str) -> BlobStore:
    container = f"t{secrets.token_hex(6)}"
    if kind == "azure":
        settings = BlobSettings(
            kind="azure", container=container,
            azure_connection_string=request.getfixturevalue("azurite"),
        )  # fmt: skip
    else:
        settings = BlobSettings(
            kind="s3", container=container, s3_region="us-east-1",
            s3_endpoint_url=request.getfixturevalue("moto_s3"),
            s3_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
            s3_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
    return build_blob_store(settings, Path("/nonexistent"))


def _run(server: Server, work: Any) -> Any:
    async def main() -> Any:
        db = Database(server.pg.dsn("engram_app"), min_size=1, max_size=2, timeout_s=10)
        await db.open()
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["azure", "s3"])
def test_round_trip_through_a_cloud_store(
    request: pytest.FixtureRequest, server: Server, http: httpx.Client, uid: str, kind: str
) -> None:
    store = _store(request, kind)
    user, session = f"cloud-{uid}", f"c-{uid}"
    conversation(server, http, user, [session], uid)
    before = snapshot(server, user)

    counts = _run(server, lambda db: archive_session(db, store, "default", session, user))
    assert counts["messages"] == 5
    keys = store.list("default/")
    assert any(k.endswith("/manifest.json") for k in keys) and len(keys) == 8
    assert http.get(f"/api/v2/sessions/{session}").status_code == 404

    # An altered object is refused and nothing is written.
    victim = next(k for k in keys if k.endswith("messages.jsonl.gz"))
    original = store.get(victim)
    store.put(victim, original[:-8] + b"\x00" * 8)
    with pytest.raises(ArchiveError) as err:
        _run(server, lambda db: restore_session(db, store, "default", session))
    assert "checksum" in err.value.message and err.value.hint
    assert http.get(f"/api/v2/sessions/{session}").status_code == 404

    store.put(victim, original)
    result = _run(server, lambda db: restore_session(db, store, "default", session))
    assert result["inserted"]["messages"] == 5
    assert snapshot(server, user) == before

"""The error mapper: what the client is told, and what the server log keeps."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.fix_server import Server

pytestmark = pytest.mark.integration


def test_a_refused_metadata_value_is_told_to_the_client_but_never_logged(
    server: Server, http: httpx.Client, uid: str
) -> None:
    secret = f"SSN-{secrets.token_hex(8)}"
    r = http.post(
        "/api/v2/users", json={"user_id": f"u-{uid}", "metadata": {"ssn": f"{secret}\u0000"}}
    )
    # Refused before the database, whose log would quote it.
    assert r.status_code == 400 and r.json()["field"] == "metadata.ssn", r.text
    assert "NUL character" in r.json()["message"] and secret not in r.text
    assert http.get("/healthz").status_code == 200  # the log lines above are written
    for log in (server.log, server.data_dir / "postgres.log"):
        assert secret not in log.read_text(errors="replace"), log

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
    assert r.status_code == 400 and "refused a value" in r.json()["message"]
    assert http.get("/healthz").status_code == 200  # the log lines above are written
    log = server.log.read_text(errors="replace")
    assert "POST /api/v2/users: database error" in log
    assert secret not in log

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


def test_a_field_named_like_a_location_is_named_in_full(client: httpx.Client, uid: str) -> None:
    # "query" is both where FastAPI found a value and the name of a parameter or key.
    assert client.post("/api/v2/users", json={"user_id": f"q-{uid}"}).status_code == 201
    body = {"session_id": f"q-{uid}", "user_id": f"q-{uid}"}
    assert client.post("/api/v2/sessions", json=body).status_code == 201
    r = client.get(f"/v1/sessions/q-{uid}/context", params={"query": "q" * 2001})
    assert r.status_code == 400 and r.json()["field"] == "query", r.text
    assert r.json()["message"].startswith("bad request: query: "), r.text
    bad = b'{"user_id": "x", "metadata": {"query": {"body": "\\ud800"}}}'
    r = client.post("/api/v2/users", content=bad, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "metadata.query.body", r.text

"""When the embedded PostgreSQL dies under `engram serve`, Engram starts it again by
itself; meanwhile requests answer 503 (retry), never 500, and /healthz fails only when
restarting keeps failing, so that Kubernetes restarts the pod."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fix_server import Server, short_tmpdir, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # kill -9 of a server's PostgreSQL

ENV = {"ENGRAM_EMBEDDED_POSTGRES__WATCH_INTERVAL_S": "0.5"}


@pytest.fixture(scope="module")
def own() -> Iterator[Server]:
    srv = start_server(short_tmpdir("eg-pg9-") / "d", api_key=secrets.token_urlsafe(24), env=ENV)
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()


def _postmaster(srv: Server) -> int | None:
    try:
        return int((srv.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _write(http: httpx.Client, sid: str) -> httpx.Response:
    """A user, then a message for the session (which enqueues an extraction job)."""
    r = http.post("/api/v2/users", json={"user_id": secrets.token_hex(6)})
    if r.status_code != 201:
        return r
    body = {"messages": [{"role_type": "user", "content": "the database came back"}]}
    return http.post(f"/api/v2/sessions/{sid}/memory", json=body)


def _until_written(srv: Server, http: httpx.Client, sid: str, killed: int) -> set[int]:
    """Write until a write succeeds on a new postmaster; every failure must be a 503."""
    statuses: set[int] = set()
    deadline = time.monotonic() + 120
    while True:
        r = _write(http, sid)
        statuses.add(r.status_code)
        if r.status_code == 200 and _postmaster(srv) not in (None, killed):
            return statuses
        if r.status_code != 200:
            assert r.status_code == 503, (r.status_code, r.text)
            assert "database" in r.json()["message"], r.text
        assert time.monotonic() < deadline, f"no successful write; saw {statuses}"
        time.sleep(0.1)


def _session(http: httpx.Client) -> str:
    uid = secrets.token_hex(6)
    assert http.post("/api/v2/users", json={"user_id": uid}).status_code == 201
    sid = f"s-{uid}"
    assert http.post("/api/v2/sessions", json={"session_id": sid, "user_id": uid}).is_success
    return sid


def test_a_killed_postmaster_is_restarted_and_writes_resume(own: Server) -> None:
    with own.client() as http:
        sid = _session(http)
        killed = _postmaster(own)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        _until_written(own, http, sid, killed)
        assert httpx.get(f"{own.base_url}/healthz").status_code == 200
        assert httpx.get(f"{own.base_url}/readyz").status_code == 200
        assert len(http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]) >= 1


def test_healthz_fails_while_restarting_fails_then_recovers(own: Server) -> None:
    conf = own.data_dir / "pg" / "engram.conf"
    good = conf.read_text()
    with own.client() as http:
        sid = _session(http)
        # The running server does not read it again; a restart cannot start with it.
        conf.write_text(good + "\nshared_buffers = 'lots'\n")
        try:
            killed = _postmaster(own)
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            deadline = time.monotonic() + 120
            while httpx.get(f"{own.base_url}/healthz").status_code != 503:
                assert time.monotonic() < deadline, "/healthz never failed"
                time.sleep(0.2)
            r = _write(http, sid)
            assert r.status_code == 503, r.text
            assert "database" in r.json()["message"]
            assert r.json()["hint"]
        finally:
            conf.write_text(good)
        _until_written(own, http, sid, killed)
        assert httpx.get(f"{own.base_url}/healthz").status_code == 200

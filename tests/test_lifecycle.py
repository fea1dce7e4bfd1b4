"""Start, restart, refuse a dimension mismatch, survive the database going away."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fix_server import ENGRAM, Server, short_tmpdir, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = short_tmpdir("egl-")
    yield root / "d"
    shutil.rmtree(root, ignore_errors=True)


def _postgres_running(data_dir: Path) -> bool:
    pid_file = data_dir / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restart_keeps_data_and_sigterm_stops_postgres(data_dir: Path) -> None:
    key = secrets.token_urlsafe(16)
    srv = start_server(data_dir, api_key=key)
    with srv.client() as http:
        http.post("/api/v2/users", json={"user_id": "keep"})
        http.post("/api/v2/sessions", json={"session_id": "s", "user_id": "keep"})
        body = {"messages": [{"role_type": "user", "content": "I live in Oslo."}]}
        assert http.post("/api/v2/sessions/s/memory", json=body).status_code == 200
    assert stop_server(srv, signal.SIGTERM) == 0
    assert not _postgres_running(data_dir)

    srv = start_server(data_dir, api_key=key)
    try:
        with srv.client() as http:
            assert http.get("/api/v2/users/keep").status_code == 200
            msgs = http.get("/api/v2/sessions/s/memory").json()["messages"]
            assert [m["content"] for m in msgs] == ["I live in Oslo."]
            hits = http.post("/api/v2/sessions/search", json={"text": "Norway", "user_id": "keep"})
            assert hits.json()["results"][0]["message"]["content"] == "I live in Oslo."
    finally:
        assert stop_server(srv, signal.SIGINT) == 0
    assert not _postgres_running(data_dir)


def test_dimension_mismatch_refuses_to_start(data_dir: Path) -> None:
    srv = start_server(data_dir, api_key="k" * 16)
    stop_server(srv)
    env = {
        **os.environ,
        "ENGRAM_EMBEDDER__KIND": "openai",
        "ENGRAM_EMBEDDER__DIMENSIONS": "1536",
        "ENGRAM_EMBEDDER__API_KEY": "sk-test",
        "ENGRAM_EMBEDDER__BASE_URL": "http://127.0.0.1:9/v1",
    }
    result = subprocess.run(
        [ENGRAM, "serve", "--data-dir", str(data_dir), "--port", "0"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    out = " ".join(result.stderr.split())
    assert "384" in out and "1536" in out and "engram reembed" in out
    assert not _postgres_running(data_dir)


def test_database_down_gives_503_then_recovers(data_dir: Path) -> None:
    # The test stops and starts PostgreSQL itself: the watchdog, which would start it
    # again first (tests/api/test_database_restart.py), looks too rarely to interfere.
    env = {"ENGRAM_EMBEDDED_POSTGRES__WATCH_INTERVAL_S": "300"}
    srv: Server = start_server(data_dir, api_key="k" * 16, env=env)
    try:
        with srv.client() as http:
            http.post("/api/v2/users", json={"user_id": "u"})
            srv.pg.stop(force=True)
            r = http.get("/api/v2/users/u")
            assert r.status_code == 503 and "database" in r.json()["message"]
            assert httpx.get(f"{srv.base_url}/readyz").status_code == 503
            assert http.post("/api/v2/users", json={"user_id": "v"}).status_code == 503

            srv.pg.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if http.get("/api/v2/users/u").status_code == 200:
                    break
                time.sleep(0.5)
            assert http.get("/api/v2/users/u").status_code == 200
            assert http.get("/api/v2/users/v").status_code == 404  # the refused write left nothing
            assert httpx.get(f"{srv.base_url}/readyz").status_code == 200
    finally:
        stop_server(srv)
        srv.pg.stop(force=True)

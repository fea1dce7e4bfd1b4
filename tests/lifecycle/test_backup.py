"""Backup with pg_dump, restore into an empty data directory, serve it; the scheduled job runs."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fix_server import ENGRAM, Server, short_tmpdir, start_server, stop_server
from tests.lifecycle.conftest import age, cli_json, conversation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = short_tmpdir("egb-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_backup_restore_then_serve_everything_back(
    server: Server, http: httpx.Client, uid: str, scratch: Path
) -> None:
    user, sessions = f"bk-{uid}", [f"b1-{uid}", f"b2-{uid}"]
    conversation(server, http, user, sessions, uid)
    original = http.get(f"/api/v2/sessions/{sessions[0]}/messages").json()["messages"]

    dump = scratch / "engram.dump"
    made = cli_json(server, "backup", "--out", str(dump))
    assert dump.stat().st_size == made["bytes"] > 0 and made["rows"]["messages"] >= 10

    target = scratch / "d"
    run = subprocess.run([ENGRAM, "restore", str(dump), "--data-dir", str(target)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    restored = json.loads(run.stdout)
    assert restored["rows"] == made["rows"]
    again = subprocess.run([ENGRAM, "restore", str(dump), "--data-dir", str(target)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 2 and "already has an Engram schema" in again.stderr

    # The key provider's keys are not in the database backup (by design): bring them too.
    shutil.copytree(server.data_dir / "keys", target / "keys")
    doctor = subprocess.run([ENGRAM, "doctor", "--data-dir", str(target)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    srv = start_server(
        target, api_key=secrets.token_urlsafe(24), env={
            "ENGRAM_LIFECYCLE__SCHEDULE": "* * * * * */2",  # the retention job every 2 s
            "ENGRAM_WORKER__STALLED_AFTER_S": "5",
        },
    )  # fmt: skip
    try:
        with srv.client() as client:
            back = client.get(f"/api/v2/sessions/{sessions[0]}/messages").json()["messages"]
            assert back == original  # protected content decrypts again
            assert f"ada.{uid}@example.com" in back[4]["content"]

            # The worker runs the scheduled retention job by itself.
            age(srv, sessions[1:])
            deadline = time.monotonic() + 90
            while client.get(f"/api/v2/sessions/{sessions[1]}").status_code != 404:
                assert time.monotonic() < deadline, srv.log.read_text()[-3000:]
                time.sleep(0.5)
            with srv.superuser() as conn:
                state = conn.execute(
                    "SELECT state FROM archives WHERE session_id = %s", (sessions[1],)
                ).fetchall()
            assert state == [("archived",)]
            assert client.get(f"/api/v2/sessions/{sessions[0]}").status_code == 200
    finally:
        assert stop_server(srv) == 0

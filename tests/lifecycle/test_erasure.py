"""GDPR erasure: afterwards no table, archive or API holds anything of the user."""

from __future__ import annotations

import gzip
import signal
import time
from typing import Any

import httpx
import pytest
from psycopg import sql

from tests.fix_server import Server
from tests.lifecycle.conftest import age, cli_json, cli_popen, conversation, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _traces(server: Server, *needles: str) -> dict[str, int]:
    """Rows of any table (read as superuser, past row security) whose text holds a needle."""
    found: dict[str, int] = {}
    with server.superuser() as conn:
        tables = conn.execute(
            """SELECT schemaname, tablename FROM pg_tables
               WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
                 -- kept on purpose: the receipt names whom it erased
                 AND tablename <> 'erasure_receipts'"""
        ).fetchall()
        for schema, table in tables:
            for needle in needles:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.{} t WHERE t::text LIKE %s").format(
                        sql.Identifier(str(schema)), sql.Identifier(str(table))
                    ),
                    (f"%{needle}%",),
                ).fetchone()
                if row and row[0]:
                    found[f"{table}:{needle}"] = int(row[0])
    return found


def _archived_traces(server: Server, needle: str) -> list[str]:
    hits = []
    for path in (server.data_dir / "archives").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            text = gzip.decompress(data) if path.suffix == ".gz" else data
            if needle.encode() in text or needle in str(path):
                hits.append(str(path))
    return hits


def _receipts(server: Server, user: str) -> list[tuple[Any, ...]]:
    with server.superuser() as conn:
        return conn.execute(
            "SELECT state, counts, requested_by FROM erasure_receipts WHERE user_id = %s",
            (user,),
        ).fetchall()


def test_erase_removes_every_trace_and_keeps_a_receipt(
    server: Server, http: httpx.Client, uid: str
) -> None:
    user, other = f"gone-{uid}", f"stays-{uid}"
    sessions = [f"e{i}-{uid}" for i in range(3)]
    conversation(server, http, user, sessions, f"tag{uid}")
    conversation(server, http, other, [f"o-{uid}"], f"keep{uid}")
    age(server, sessions[:1])
    cli_json(server, "retention", "run")  # one session of the user is in blob storage
    assert _archived_traces(server, f"tag{uid}")
    assert _traces(server, user)
    kept = snapshot(server, other)

    r = http.delete(f"/v1/users/{user}", params={"erase": "true"})
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["state"] == "completed" and receipt["requested_by"] == "bootstrap-key"
    removed = receipt["removed"]
    assert removed["sessions"] == 2 and removed["archives"] == 1
    assert removed["messages"] == 10 and removed["archived_messages"] == 5
    assert removed["data_key_versions"] >= 1  # the user's data key was crypto-shredded
    assert removed["users"] == 1 and removed["facts"] > 0 and removed["entities"] > 0
    assert removed["jobs"] >= 1  # the extraction jobs named the user

    # The append-only, hash-chained audit log keeps every record, the erasure's own
    # among them, but they name the user and their sessions only by pseudonyms whose
    # mapping went with the user.
    assert _traces(server, user, *sessions, f"tag{uid}") == {}
    with server.superuser() as conn:
        audited = conn.execute(
            "SELECT outcome, resource FROM audit_log WHERE action = 'DELETE /v1/users/{user_id}'"
        ).fetchall()
    assert any(o == "success" and r.startswith("/v1/users/user:") for o, r in audited), audited
    assert _archived_traces(server, f"tag{uid}") == []
    assert http.get(f"/api/v2/users/{user}").status_code == 404
    assert http.get(f"/api/v2/sessions/{sessions[1]}/messages").status_code == 404
    hits = http.post("/api/v2/sessions/search", json={"text": f"beagle Biscuit tag{uid}"})
    assert f"tag{uid}" not in hits.text
    assert snapshot(server, other) == kept  # nobody else lost anything
    # Asking for the erased user again does not write the id back anywhere.
    assert _traces(server, user, *sessions, f"tag{uid}") == {}

    # Asking again answers the same receipt; an unknown user is a 404.
    again = http.delete(f"/v1/users/{user}", params={"erase": "true"})
    assert again.status_code == 200 and again.json()["receipt_id"] == receipt["receipt_id"]
    assert http.delete(f"/v1/users/nobody-{uid}", params={"erase": "true"}).status_code == 404
    [(state, counts, _)] = _receipts(server, user)
    assert state == "completed" and counts == removed


def test_kill_9_mid_erasure_then_resume_completes_the_receipt(
    server: Server, http: httpx.Client, uid: str
) -> None:
    user = f"killed-{uid}"
    sessions = [f"x{i}-{uid}" for i in range(5)]
    conversation(server, http, user, sessions, f"kx{uid}")

    # A lock on a message of the third session stops erasure there; kill it while it waits.
    with server.superuser() as blocker:
        blocker.autocommit = False
        blocker.execute(
            "SELECT 1 FROM messages WHERE session_id = %s FOR SHARE", (sessions[2],)
        ).fetchall()
        proc = cli_popen(server, "erase", "--user", user)
        deadline = time.monotonic() + 120
        while not any(
            state == "running" and counts.get("sessions") == 2
            for state, counts, _ in _receipts(server, user)
        ):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "erasure never reached the third session"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        blocker.rollback()

    [(state, counts, actor)] = _receipts(server, user)
    assert state == "running" and counts["sessions"] == 2 and actor.startswith("cli:")
    deadline = time.monotonic() + 30
    while http.get(f"/api/v2/sessions/{sessions[2]}").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert http.get(f"/api/v2/users/{user}").status_code == 200  # half-way: not gone yet

    receipt = cli_json(server, "erase", "--user", user)
    assert receipt["state"] == "completed"
    assert receipt["removed"]["sessions"] == 5 and receipt["removed"]["messages"] == 25
    assert len(_receipts(server, user)) == 1  # the interrupted receipt was completed
    assert _traces(server, user, f"kx{uid}") == {}

"""Expired sessions go to blob storage and come back byte for byte; kill -9 loses nothing."""

from __future__ import annotations

import gzip
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.fix_server import Server
from tests.lifecycle.conftest import age, cli, cli_json, cli_popen, conversation, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _archive_dirs(server: Server, user: str) -> list[Path]:
    root = server.data_dir / "archives"
    return sorted(p.parent for p in root.rglob("manifest.json") if f"/u-{user}/" in str(p))


def _archives(server: Server, session: str) -> list[tuple[str, str]]:
    with server.superuser() as conn:
        rows = conn.execute(
            "SELECT archive_id::text, state FROM archives WHERE session_id = %s", (session,)
        ).fetchall()
    return [(str(a), str(s)) for a, s in rows]


def test_expired_sessions_are_archived_verified_and_restored_intact(
    server: Server, http: httpx.Client, uid: str
) -> None:
    user = f"arch-{uid}"
    old, recent = [f"a1-{uid}", f"a2-{uid}"], f"a3-{uid}"
    conversation(server, http, user, [*old, recent], uid)
    before = snapshot(server, user)
    assert before["facts"] and before["entity_mentions"]
    age(server, old)
    aged = snapshot(server, user)  # what must come back (the ageing is part of the data)

    report = cli_json(server, "retention", "run")
    assert report["default"]["archived"] >= 2
    for s in old:
        assert http.get(f"/api/v2/sessions/{s}").status_code == 404
        assert [state for _, state in _archives(server, s)] == ["archived"]
    assert len(http.get(f"/api/v2/sessions/{recent}/messages").json()["messages"]) == 5
    with server.superuser() as conn:
        left = conn.execute(
            "SELECT count(*) FROM messages WHERE session_id = ANY(%s)", (old,)
        ).fetchone()
    assert left == (0,)

    # The archive: gzip JSON lines per table and a manifest with counts and checksums.
    dirs = _archive_dirs(server, user)
    assert len(dirs) == 2
    manifest = json.loads((dirs[0] / "manifest.json").read_text())
    assert manifest["user_id"] == user and manifest["counts"]["messages"] == 5
    lines = gzip.decompress((dirs[0] / "messages.jsonl.gz").read_bytes()).splitlines()
    assert len(lines) == 5 and all(b'"embedding"' in line for line in lines)

    listing = cli_json(server, "archive", "list", "--user", user, "--json")
    assert sorted((a["session_id"], a["state"]) for a in listing) == [
        (old[0], "archived"),
        (old[1], "archived"),
    ]
    assert "archived" in cli(server, "archive", "list", "--session", old[0]).stdout

    for s in old:
        restored = cli_json(server, "archive", "restore", s)
        assert restored["inserted"]["messages"] == 5
    after = snapshot(server, user)
    for table in aged:
        assert after[table] == aged[table], table  # content, metadata, embeddings, all columns
    messages = http.get(f"/api/v2/sessions/{old[0]}/messages").json()["messages"]
    assert messages[0]["metadata"]["nested"] == {"émoji": "🐶", "i": 0}
    # The protected message was archived as ciphertext (with its key version in the
    # manifest) and still decrypts after the restore: same row id, same key.
    assert manifest["key_versions"] and manifest["key_versions"][0]["version"] >= 1
    assert b"@example.com" not in b"".join(lines)
    assert any(b'"content_enc": "\\\\x' in line for line in lines)  # JSON-escaped bytea hex
    assert f"ada.{uid}@example.com" in messages[4]["content"]

    # Restored sessions get another retention period; a second restore has nothing to do.
    again = cli_json(server, "retention", "run")
    assert http.get(f"/api/v2/sessions/{old[0]}").status_code == 200, again
    second = cli(server, "archive", "restore", old[0], check=False)
    assert second.returncode == 2 and "not found" in second.stderr


def test_kill_9_mid_archival_then_resume_loses_nothing_and_duplicates_nothing(
    server: Server, http: httpx.Client, uid: str
) -> None:
    user = f"kill-{uid}"
    sessions = [f"k{i}-{uid}" for i in range(4)]
    conversation(server, http, user, sessions, uid)
    age(server, sessions)
    aged = snapshot(server, user)

    # Hold a lock on a message of the third session: archival writes and verifies that
    # session's files, then waits to delete its rows, and is killed right there.
    with server.superuser() as blocker:
        blocker.autocommit = False
        blocker.execute(
            "SELECT 1 FROM messages WHERE session_id = %s FOR SHARE", (sessions[2],)
        ).fetchall()
        proc = cli_popen(server, "retention", "run")
        deadline = time.monotonic() + 120
        while not (
            [st for _, st in _archives(server, sessions[2])] == ["writing"]
            and len(_archive_dirs(server, user)) == 3
        ):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "archival never reached the third session"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        blocker.rollback()

    # The crash left two archived sessions, the third still in Postgres, the fourth untouched.
    assert [s for _, s in _archives(server, sessions[0])] == ["archived"]
    assert [s for _, s in _archives(server, sessions[2])] == ["writing"]
    deadline = time.monotonic() + 30
    while http.get(f"/api/v2/sessions/{sessions[2]}").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert len(http.get(f"/api/v2/sessions/{sessions[2]}/messages").json()["messages"]) == 5

    report = cli_json(server, "retention", "run")
    assert report["default"]["archived"] >= 2
    for s in sessions:
        assert [state for _, state in _archives(server, s)] == ["archived"], s
        assert http.get(f"/api/v2/sessions/{s}").status_code == 404
    assert len(_archive_dirs(server, user)) == 4  # the interrupted attempt was reused

    for s in sessions:
        cli_json(server, "archive", "restore", s)
    after = snapshot(server, user)
    for table in aged:
        assert after[table] == aged[table], table

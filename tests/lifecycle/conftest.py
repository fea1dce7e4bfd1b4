"""Shared steps of the lifecycle tests: conversations through the API, rows read directly."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import httpx

from tests.fix_server import ENGRAM, Server

# Rows of a user as PostgreSQL stores them (to_jsonb text: every column, exact values).
SNAPSHOT = {
    "sessions": "SELECT session_id AS k, to_jsonb(t)::text FROM sessions t WHERE user_id = %(u)s",
    "messages": "SELECT uuid::text AS k, to_jsonb(t)::text FROM messages t WHERE user_id = %(u)s",
    "episodes": "SELECT uuid::text AS k, to_jsonb(t)::text FROM episodes t WHERE user_id = %(u)s",
    "entities": "SELECT uuid::text AS k, to_jsonb(t)::text FROM entities t WHERE user_id = %(u)s",
    # Provenance order may differ after a restore; the set of episodes must not.
    "facts": """SELECT uuid::text AS k, (to_jsonb(t) || jsonb_build_object('episodes',
                   (SELECT jsonb_agg(e ORDER BY e) FROM unnest(t.episodes) e)))::text
                FROM facts t WHERE user_id = %(u)s""",
    "entity_mentions": """SELECT x.entity_uuid::text || x.message_uuid::text AS k,
                              to_jsonb(x)::text FROM entity_mentions x
                          JOIN messages m ON m.uuid = x.message_uuid WHERE m.user_id = %(u)s""",
}

LINES = [
    "I adopted a beagle named Biscuit {tag}.",
    "My sister Clara lives in Porto and works as a nurse.",
    "I started learning the cello last spring {tag}.",
    "We are planning a trip to Kyoto in October.",
    "Write to me at ada.{tag}@example.com about the trip.",  # protected: stored encrypted
]


def conversation(
    server: Server, http: httpx.Client, user: str, sessions: list[str], tag: str
) -> None:
    """A user with sessions of a few messages each (with metadata), extracted by the worker."""
    if http.get(f"/api/v2/users/{user}").status_code == 404:
        assert http.post("/api/v2/users", json={"user_id": user}).status_code == 201
    for i, session in enumerate(sessions):
        assert http.post(
            "/api/v2/sessions", json={"session_id": session, "user_id": user}
        ).is_success
        messages = [
            {"role": "Ada", "role_type": "user", "content": line.format(tag=tag),
             "metadata": {"n": n, "tag": tag, "nested": {"émoji": "🐶", "i": i}}}
            for n, line in enumerate(LINES)
        ]  # fmt: skip
        r = http.post(f"/api/v2/sessions/{session}/memory", json={"messages": messages})
        assert r.status_code == 200, r.text
    wait_extracted(server, sessions)


def wait_extracted(server: Server, sessions: list[str], timeout: float = 60) -> None:
    """Block until the worker has processed every episode of the sessions."""
    deadline = time.monotonic() + timeout
    while True:
        with server.superuser() as conn:
            row = conn.execute(
                "SELECT count(*) FROM episodes WHERE session_id = ANY(%s) AND status = 'pending'",
                (sessions,),
            ).fetchone()
        if row is not None and row[0] == 0:
            return
        assert time.monotonic() < deadline, f"episodes of {sessions} still pending"
        time.sleep(0.2)


def snapshot(server: Server, user: str) -> dict[str, dict[str, str]]:
    with server.superuser() as conn:
        return {
            table: {str(k): str(v) for k, v in conn.execute(q, {"u": user}).fetchall()}
            for table, q in SNAPSHOT.items()
        }


def age(server: Server, sessions: list[str], days: int = 400) -> None:
    """Make sessions look idle for ``days`` (as if nobody had written for that long)."""
    with server.superuser() as conn:
        conn.execute(
            """UPDATE sessions SET updated_at = now() - make_interval(days => %(d)s),
                                   created_at = now() - make_interval(days => %(d)s)
               WHERE session_id = ANY(%(s)s)""",
            {"d": days, "s": sessions},
        )
        conn.execute(
            """UPDATE messages SET created_at = created_at - make_interval(days => %(d)s)
               WHERE session_id = ANY(%(s)s)""",
            {"d": days, "s": sessions},
        )


def cli(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [ENGRAM, *args, "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def cli_json(server: Server, *args: str) -> Any:
    return json.loads(cli(server, *args).stdout)


def cli_popen(server: Server, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ENGRAM, *args, "--data-dir", str(server.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

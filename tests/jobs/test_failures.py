"""Extraction of awkward episodes: very long words and texts, and jobs that fail for a
reason of their own rather than an outage (worker in-process)."""

from __future__ import annotations

import os
import random
import string
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.fix_app import App
from tests.fix_server import ENGRAM, Server


def _episode(server: App | Server, session_id: str, timeout: float = 120) -> dict[str, Any]:
    """The session's episode once the worker has finished with it (done, or failed with
    its job failed for good)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server.superuser() as conn:
            cur = conn.execute(
                """SELECT e.status, e.attempts, e.error, j.status::text AS job
                   FROM episodes e
                   JOIN procrastinate_jobs j ON (j.args ->> 'episode_uuid')::uuid = e.uuid
                   WHERE e.session_id = %s""",
                (session_id,),
            )
            cols = [d.name for d in cur.description or []]
            row = cur.fetchone()
        if row is not None and row[3] in ("succeeded", "failed"):
            return dict(zip(cols, row, strict=True))
        time.sleep(0.2)
    raise AssertionError(f"the episode of {session_id} was not finished in {timeout}s")


def _session(http: httpx.Client, uid: str, *contents: str) -> str:
    assert http.post("/api/v2/users", json={"user_id": uid}).status_code == 201
    sid = f"s-{uid}"
    r = http.post("/api/v2/sessions", json={"session_id": sid, "user_id": uid})
    assert r.status_code == 201, r.text
    body = {"messages": [{"role": "Ada", "role_type": "user", "content": c} for c in contents]}
    r = http.post(f"/api/v2/sessions/{sid}/memory", json=body)
    assert r.status_code == 200, r.text
    return sid


def _word(n: int) -> str:
    rnd = random.Random(n)
    return "Q" + "".join(rnd.choice(string.ascii_lowercase) for _ in range(n - 1))


def test_an_episode_with_a_very_long_name_is_extracted(
    app: App, client: httpx.Client, uid: str
) -> None:
    """A 60,000-letter word taken for a name (and a fact about it) no longer trips an
    index: the job succeeds at once, and the names and fact texts stored are bounded."""
    sid = _session(
        client, uid,
        f"My friend {_word(60_000)} lives in Oslo.",
        "I love " + " ".join(_word(12 + i % 7).lower() for i in range(3800)) + ".",
        "I work at Statoil.",
    )  # fmt: skip
    episode = _episode(app, sid)
    assert (episode["job"], episode["status"], episode["attempts"]) == ("succeeded", "done", 1), (
        episode
    )
    with app.superuser() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM entities WHERE user_id = %s", (uid,))]
        facts = [r[0] for r in conn.execute("SELECT fact FROM facts WHERE user_id = %s", (uid,))]
    assert any("Statoil" in f for f in facts) and any("Oslo" in n for n in names)
    assert max(len(n) for n in names) <= 200, sorted(len(n) for n in names)
    assert max(len(f) for f in facts) <= 1000, sorted(len(f) for f in facts)
    assert any(n.startswith("Q") and n.endswith("\u2026") for n in names)


def _jobs_list(server: Server) -> str:
    result = subprocess.run(
        [ENGRAM, "jobs", "list", "--status", "failed", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("ddl", "reason"),
    [
        # An index row too large (an OperationalError to psycopg): the error of the
        # outside test, once reported as "the database connection failed" and retried
        # for minutes. The indexed value is ~6 kB of hashes: it does not compress.
        (
            "CREATE FUNCTION {name}(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$"
            " SELECT string_agg(md5(t || i::text), '') FROM generate_series(1, 200) i $$;"
            " CREATE INDEX {name} ON facts ({name}(fact)) WHERE position('zqvtest' in fact) > 0",
            "index row",
        ),
        # A constraint the row violates: an IntegrityError.
        (
            "ALTER TABLE facts ADD CONSTRAINT {name} CHECK (position('zqvtest' in fact) = 0)"
            " NOT VALID",
            "violates check constraint",
        ),
    ],
)
@pytest.mark.integration  # `engram jobs list` beside a server
def test_a_job_the_database_refuses_fails_once_with_its_reason(
    server: Server, http: httpx.Client, uid: str, ddl: str, reason: str
) -> None:
    """A statement the database refuses every time is not an outage: the job fails after
    one attempt, and `engram jobs list` shows the database's own message."""
    name = f"egtest_{uid}"
    with server.superuser() as conn:
        conn.execute(ddl.format(name=name))
    try:
        sid = _session(http, uid, "I love zqvtest.")
        episode = _episode(server, sid)
    finally:
        with server.superuser() as conn:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
            conn.execute(f"DROP FUNCTION IF EXISTS {name}")
            conn.execute(f"ALTER TABLE facts DROP CONSTRAINT IF EXISTS {name}")
    assert (episode["job"], episode["status"], episode["attempts"]) == ("failed", "failed", 1), (
        episode
    )
    assert reason in episode["error"] and "connection" not in episode["error"], episode
    listed = _jobs_list(server)
    assert reason in listed, listed

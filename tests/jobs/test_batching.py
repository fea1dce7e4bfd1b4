"""A worker with a backlog extracts a user's queued episodes in batches: the same graph as
one episode at a time, each job still marked done, and one bad episode fails alone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fix_server import ENGRAM, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Moves and job changes close facts, repeats add provenance, names come back as aliases.
CONVERSATION = [
    ["I live in Oslo.", "I work at Statoil as a geologist."],
    ["My sister Mia lives in Bergen."],
    ["I love hiking in the mountains.", "Yesterday I went to the Munch Museum."],
    ["I moved to Trondheim last week."],
    ["I started working at Equinor in March 2023."],
    ["I love hiking in the mountains."],
    ["My dog is named Bamse.", "Bamse loves the snow."],
    ["Mia moved to Stavanger."],
    ["I bought a red bike two weeks ago."],
    ["I joined a chess club.", "I like chess."],
    ["I moved to Oslo again in 2024."],
    ["My friend Jonas works at Google."],
    ["Jonas lives in Berlin.", "Jonas visited Oslo in May."],
    ["I am married to Erik."],
    ["I finished the Oslo marathon last Saturday."],
    ["I work at Statoil as a geologist."],
    ["My sister Mia lives in Bergen."],
    ["Erik loves jazz.", "Erik works at the University of Oslo."],
    ["I plan to visit Kyoto next year."],
    ["Jonas moved to Munich."],
]
START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def _add_user(
    server: Server, user: str, episodes: list[list[str]], aside: tuple[int, ...] = ()
) -> None:
    """The user's episodes in one session, those at positions ``aside`` in another."""
    with server.client() as http:
        assert http.post("/api/v2/users", json={"user_id": user}).status_code == 201
        for sid in (f"{user}-s", f"{user}-t"):
            body = {"session_id": sid, "user_id": user}
            assert http.post("/api/v2/sessions", json=body).status_code == 201
        for day, texts in enumerate(episodes):
            at = START + timedelta(days=3 * day)
            msgs = [
                {"role": "Ada", "role_type": "user", "content": t,
                 "created_at": (at + timedelta(minutes=k)).isoformat()}
                for k, t in enumerate(texts)
            ]  # fmt: skip
            sid = f"{user}-t" if day in aside else f"{user}-s"
            r = http.post(f"/api/v2/sessions/{sid}/memory", json={"messages": msgs})
            assert r.status_code == 200, r.text


def _run_worker(
    server: Server, user: str, env: dict[str, str], args: tuple[str, ...] = (), within: float = 120
) -> None:
    """Run `engram worker` until no episode of the user is pending."""
    worker = subprocess.Popen(
        [ENGRAM, "worker", "--data-dir", str(server.data_dir), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with server.superuser() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM episodes WHERE user_id = %s AND status = 'pending'",
                    (user,),
                ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"episodes of {user} still pending after {within} s")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0


def _graph(server: Server, user: str) -> dict[str, Any]:
    """The user's graph with every id replaced by what it names."""
    with server.superuser() as conn:
        position = {
            r[0]: i
            for i, r in enumerate(
                conn.execute("SELECT uuid FROM messages WHERE user_id = %s ORDER BY seq", (user,))
            )
        }
        names = dict(conn.execute("SELECT uuid, name FROM entities WHERE user_id = %s", (user,)))
        entities = sorted(
            (r[0], sorted(r[1]), sorted(r[2]), sorted(position[m] for m in r[3]))
            for r in conn.execute(
                """SELECT e.name, e.labels, e.aliases,
                          array(SELECT message_uuid FROM entity_mentions m
                                WHERE m.entity_uuid = e.uuid)
                   FROM entities e WHERE user_id = %s""",
                (user,),
            )
        )
        facts = sorted(
            (names[r[0]], r[1], names[r[2]], r[3], str(r[4]), str(r[5]), r[6],
             [position[m] for m in r[7]])
            for r in conn.execute(
                """SELECT source_uuid, relation, target_uuid, fact, valid_at, invalid_at,
                          expired_at IS NULL, episodes
                   FROM facts WHERE user_id = %s""",
                (user,),
            )
        )  # fmt: skip
        states = [
            (str(r[0]), r[1])
            for r in conn.execute(
                "SELECT status, processed_at FROM episodes WHERE user_id = %s ORDER BY created_at",
                (user,),
            )
        ]
    return {"entities": entities, "facts": facts, "states": states}


def test_a_backlog_extracted_in_batches_makes_the_same_graph(api_only: Server) -> None:
    _add_user(api_only, "alone", CONVERSATION)
    _run_worker(api_only, "alone", {"ENGRAM_WORKER__BATCH": "1"})
    _add_user(api_only, "batched", CONVERSATION)
    _run_worker(api_only, "batched", {"ENGRAM_WORKER__BATCH": "8"})

    alone, batched = _graph(api_only, "alone"), _graph(api_only, "batched")
    assert batched["entities"] == alone["entities"]
    assert batched["facts"] == alone["facts"]
    # A graph worth comparing: moves closed facts, repeats added provenance.
    facts = alone["facts"]
    assert len(facts) >= 20
    assert any(f[5] != "None" and f[6] for f in facts), "a move closed no fact"
    assert any(len(f[7]) > 1 for f in facts), "no repeated fact gained provenance"

    assert {s for s, _ in alone["states"]} == {s for s, _ in batched["states"]} == {"done"}
    # One transaction per job one at a time; 20 episodes in 3 transactions when batched.
    assert len({t for _, t in alone["states"]}) == len(CONVERSATION)
    assert len({t for _, t in batched["states"]}) == 3
    listed = subprocess.run(
        [ENGRAM, "jobs", "list", "--status", "succeeded", "--data-dir", str(api_only.data_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert listed.stdout.count("succeeded") == 2 * len(CONVERSATION)


def test_a_bad_episode_in_a_batch_fails_alone(api_only: Server) -> None:
    episodes = [
        ["I live in Oslo."],
        ["My sister Mia lives in Bergen."],
        ["Write to me at ada.lovelace@example.com, I moved to Paris."],
        ["I work at Statoil."],
        ["I like chess."],
    ]
    # The bad one in a session of its own: later messages of its session would read it as
    # context, and fail as well.
    _add_user(api_only, "ada", episodes, aside=(2,))
    with api_only.superuser() as conn:
        # Someone tampered with the third message's ciphertext: it no longer decrypts.
        row = conn.execute(
            """UPDATE messages SET content_enc = set_byte(content_enc, 40,
                                                         get_byte(content_enc, 40) # 1)
               WHERE user_id = 'ada' AND content_enc IS NOT NULL RETURNING uuid"""
        ).fetchall()
    assert len(row) == 1
    _run_worker(api_only, "ada", {"ENGRAM_WORKER__BATCH": "16", "ENGRAM_WORKER__MAX_ATTEMPTS": "1"})
    with api_only.superuser() as conn:
        states = conn.execute(
            "SELECT status, error FROM episodes WHERE user_id = 'ada' ORDER BY created_at"
        ).fetchall()
        facts = [r[0] for r in conn.execute("SELECT fact FROM facts WHERE user_id = 'ada'")]
    assert [s for s, _ in states] == ["done", "done", "failed", "done", "done"]
    assert "failed authentication" in (states[2][1] or ""), states[2][1]
    for word in ("Oslo", "Bergen", "Statoil", "chess"):
        assert any(word in f for f in facts), (word, facts)
    assert not any("Paris" in f for f in facts)


def test_free_slots_do_not_wait_for_the_next_poll(api_only: Server) -> None:
    """One user's backlog, two slots: each job can start only when the one before it has
    ended (same lock); the worker must look again then, not at its next poll (a minute)."""
    _add_user(api_only, "ada", CONVERSATION[:6])
    _run_worker(
        api_only, "ada",
        {"ENGRAM_WORKER__BATCH": "1", "ENGRAM_WORKER__POLL_INTERVAL_S": "60"},
        args=("--concurrency", "2"), within=50,
    )  # fmt: skip

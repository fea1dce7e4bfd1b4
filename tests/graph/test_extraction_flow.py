"""Messages in through the Zep API, a temporal knowledge graph out (the app and its worker
in process)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.fix_app import App
from tests.fix_server import Server


def _wait_extracted(app: App | Server, session_id: str, timeout: float = 30) -> None:
    """Block until every episode of the session has been processed by the worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.superuser() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FROM episodes"
                " WHERE session_id = %s",
                (session_id,),
            ).fetchone()
        assert row is not None
        if row[1] and row[0] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"episodes of {session_id} still pending after {timeout}s")


def _facts(app: App | Server, user_id: str) -> list[dict[str, Any]]:
    with app.superuser() as conn:
        cur = conn.execute(
            """SELECT f.uuid, f.fact, f.relation, t.name AS target, f.valid_at, f.invalid_at,
                      f.expired_at, f.episodes
               FROM facts f JOIN entities t ON t.uuid = f.target_uuid
               WHERE f.user_id = %s ORDER BY f.created_at""",
            (user_id,),
        )
        cols = [d.name for d in cur.description or []]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _add(client: httpx.Client, session: str, content: str, created_at: str) -> None:
    body = {"messages": [{"role": "Ada", "role_type": "user", "content": content,
                          "created_at": created_at}]}  # fmt: skip
    assert client.post(f"/api/v2/sessions/{session}/memory", json=body).status_code == 200


@pytest.fixture
def ada(client: httpx.Client, uid: str) -> tuple[str, str]:
    client.post("/api/v2/users", json={"user_id": f"ada-{uid}", "first_name": "Ada"})
    client.post("/api/v2/sessions", json={"session_id": f"s-{uid}", "user_id": f"ada-{uid}"})
    return f"ada-{uid}", f"s-{uid}"


def test_a_move_closes_the_old_residence_without_deleting_it(
    app: App, client: httpx.Client, ada: tuple[str, str]
) -> None:
    user, session = ada
    _add(client, session, "I live in Paris with my cat.", "2023-01-10T10:00:00Z")
    _wait_extracted(app, session)
    _add(client, session, "I moved to Lisbon yesterday!", "2024-03-05T09:00:00Z")
    _wait_extracted(app, session)

    lives = [f for f in _facts(app, user) if f["relation"] == "LIVES_IN"]
    paris = next(f for f in lives if f["target"] == "Paris")
    lisbon = next(f for f in lives if f["target"] == "Lisbon")
    assert "Ada" in lisbon["fact"] and "Lisbon" in lisbon["fact"]
    assert lisbon["valid_at"].date().isoformat() == "2024-03-04"  # "yesterday"
    assert lisbon["invalid_at"] is None and lisbon["expired_at"] is None
    assert paris["invalid_at"] == lisbon["valid_at"]  # it held until the move
    assert paris["expired_at"] is not None  # and we learned that now

    memory = client.get(f"/api/v2/sessions/{session}/memory").json()
    relevant = memory["relevant_facts"]
    assert any("Lisbon" in f["fact"] for f in relevant)
    assert all("Paris" not in f["fact"] or "cat" in f["fact"] for f in relevant)
    one = client.get(f"/api/v2/facts/{lisbon['uuid']}").json()["fact"]
    assert one["fact"] == lisbon["fact"] and one["valid_at"].startswith("2024-03-04")


def test_facts_search_and_delete(app: App, client: httpx.Client, ada: tuple[str, str]) -> None:
    user, session = ada
    _add(client, session, "I work at Acme Corp as a data engineer.", "2024-01-02T10:00:00Z")
    _wait_extracted(app, session)
    found = client.post(
        "/api/v2/sessions/search?limit=3",
        json={"text": "Where is her job?", "user_id": user, "search_scope": "facts"},
    ).json()["results"]
    assert found and "Acme" in found[0]["fact"]["fact"]
    uuid = found[0]["fact"]["uuid"]
    assert client.delete(f"/api/v2/facts/{uuid}").status_code == 200
    assert client.get(f"/api/v2/facts/{uuid}").status_code == 404
    assert client.delete(f"/api/v2/facts/{uuid}").status_code == 404


def test_deleting_messages_removes_facts_they_alone_support(
    app: App, client: httpx.Client, ada: tuple[str, str], uid: str
) -> None:
    user, session = ada
    _add(client, session, "I love painting landscapes.", "2024-01-02T10:00:00Z")
    _wait_extracted(app, session)
    other = f"s2-{uid}"
    client.post("/api/v2/sessions", json={"session_id": other, "user_id": user})
    _add(client, other, "I love painting landscapes.", "2024-02-02T10:00:00Z")
    _add(client, other, "I bought a Toyota Corolla.", "2024-02-03T10:00:00Z")
    _wait_extracted(app, other)
    before = _facts(app, user)
    painting = [f for f in before if "painting" in f["fact"]]
    assert len(painting) == 1 and len(painting[0]["episodes"]) == 2  # deduplicated
    assert any("Toyota" in f["fact"] for f in before)

    assert client.delete(f"/api/v2/sessions/{other}/memory").status_code == 200
    after = _facts(app, user)
    assert not any("Toyota" in f["fact"] for f in after)  # its only source is gone
    kept = [f for f in after if "painting" in f["fact"]]
    assert len(kept) == 1 and len(kept[0]["episodes"]) == 1  # still stated elsewhere


def test_extraction_is_idempotent_per_episode(
    app: App, client: httpx.Client, ada: tuple[str, str]
) -> None:
    user, session = ada
    _add(client, session, "I joined the chess club in 2022.", "2024-01-02T10:00:00Z")
    _wait_extracted(app, session)
    before = _facts(app, user)
    with app.superuser() as conn:
        episode = conn.execute(
            "SELECT uuid FROM episodes WHERE session_id = %s", (session,)
        ).fetchone()
        assert episode is not None
        conn.execute(
            """SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('extract', 'engram.extract_episode',
                   0, NULL, NULL, jsonb_build_object('tenant_id', 'default',
                   'episode_uuid', %s::text), NULL)::procrastinate_job_to_defer_v1])""",
            (episode[0],),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            todo = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                " AND args->>'episode_uuid' = %s",
                (str(episode[0]),),
            ).fetchone()
            if todo == (0,):
                break
            time.sleep(0.2)
    assert _facts(app, user) == before
    assert any(f["valid_at"].year == 2022 for f in before)

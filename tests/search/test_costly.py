"""A costly search over a large graph leaves the server free for everyone else.

A user with a thousand messages and a graph whose facts each cite thousands of episodes
(as a fact said again and again over a long history does): the search's work must not
hold the event loop, so /healthz answers while such searches run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fix_app import App, running_app
from tests.fix_server import short_tmpdir
from tests.graph.test_extraction_flow import _wait_extracted

pytestmark = pytest.mark.slow  # a graph of 1,000 messages to build first

NAMES = ["Maria", "Jonas", "Lena", "Omar", "Priya", "Tomas", "Yuki", "Carla", "Ivan", "Nadia"]
CITIES = ["Porto", "Lyon", "Graz", "Turku", "Bergen", "Malaga", "Ghent", "Krakow", "Split"]
SUBJECTS = ["piano", "chemistry", "history", "judo", "French", "painting", "cello"]
EPISODES = 6000  # episodes each fact cites


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[App, str]]:
    """Its own app (a stalled one must not hold up the other tests) with one user of
    1,000 messages, their graph built by the worker, each fact citing EPISODES episodes."""
    with running_app(short_tmpdir("eg-cost-") / "d") as srv:
        yield from _fill(srv)


def _fill(srv: App) -> Iterator[tuple[App, str]]:
    user, session = "big", "big-s"
    with srv.client() as http:
        assert http.post("/api/v2/users", json={"user_id": user}).status_code == 201
        body = {"session_id": session, "user_id": user}
        assert http.post("/api/v2/sessions", json=body).status_code == 201
        texts = [
            f"My friend {NAMES[i % 10]} lives in {CITIES[i % 9]} and teaches {SUBJECTS[i % 7]}."
            if i % 2 == 0
            else f"I visited {CITIES[i % 9]} with {NAMES[(i * 3) % 10]} to learn {SUBJECTS[i % 7]}."
            for i in range(1000)
        ]
        for start in range(0, len(texts), 100):
            msgs = [{"role_type": "user", "content": t} for t in texts[start : start + 100]]
            r = http.post(f"/api/v2/sessions/{session}/memory", json={"messages": msgs})
            assert r.status_code == 200, r.text
    _wait_extracted(srv, session, timeout=300)
    # The API cannot make a fact cite thousands of episodes short of thousands of
    # requests and extraction jobs: the only direct write of this test.
    with srv.superuser() as conn:
        conn.execute(
            """WITH e AS (SELECT array_agg(gen_random_uuid()) AS a
                          FROM generate_series(1, %s))
               UPDATE facts f SET episodes = e.a FROM e WHERE f.user_id = %s""",
            (EPISODES, user),
        )
        row = conn.execute("SELECT count(*) FROM facts WHERE user_id = %s", (user,)).fetchone()
    assert row is not None and row[0] >= 20, "the graph should have facts to expand"
    yield srv, user


async def _get(srv: App, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request on the app's own loop, as a server's connection would be."""
    transport = httpx.ASGITransport(app=srv.asgi)
    async with httpx.AsyncClient(transport=transport, base_url=srv.base_url) as c:
        return await c.request(method, path, **kw)


def test_healthz_answers_while_costly_searches_run(big: tuple[App, str]) -> None:
    srv, user = big
    results: list[httpx.Response] = []

    def search(i: int) -> None:
        body = {"text": f"Where does {NAMES[i]} live and what does she teach?", "user_id": user,
                "search_type": "mmr" if i % 2 else "similarity"}  # fmt: skip
        headers = {"Authorization": f"Api-Key {srv.api_key}"}
        path = "/api/v2/sessions/search?limit=100"
        results.append(srv.loop.run(_get(srv, "POST", path, json=body, headers=headers), 900))

    # Each search, its work done, waits to write its audit record while the audit log is
    # locked: the searches stay in flight until the lock goes.
    with srv.superuser() as lock:
        lock.execute("BEGIN")
        lock.execute("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
        threads = [threading.Thread(target=search, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        with srv.superuser() as watch:
            # Until a search is at its work: PostgreSQL has answered its graph query and
            # waits for the server (which ranks what it found), or it is done and waits
            # on the lock.
            while True:
                row = watch.execute(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE (wait_event_type = 'Client' AND state <> 'idle'
                              AND query LIKE '%%hop1%%')
                          OR (wait_event_type = 'Lock' AND query LIKE '%%audit_log%%')"""
                ).fetchone()
                assert all(t.is_alive() for t in threads), [r.text for r in results]
                if row and row[0] >= 1:
                    break
                time.sleep(0.01)
        # Before, each search held the event loop for a minute (a timeout here); now
        # /healthz answers at once, while the searches are held by the lock.
        health = srv.loop.run(_get(srv, "GET", "/healthz"), timeout=30)
        assert health.status_code == 200
        assert all(t.is_alive() for t in threads), "the searches should still be in flight"
        lock.execute("ROLLBACK")
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
    assert all(r.json()["results"] for r in results)

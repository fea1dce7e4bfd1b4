"""One key or tenant cannot take the whole server: concurrency and rate limits answer 429
with Retry-After, and a pool with no connection free answers 503 "overloaded" (not
"database not reachable").

A request is held in flight by a lock on the users table (taken by the test as the
superuser): it waits in PostgreSQL, holding its slot and its connection, until released.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.fix_app import App, running_app
from tests.fix_server import short_tmpdir


@pytest.fixture(scope="module")
def limited() -> Iterator[App]:
    limits = {
        "concurrent_requests_per_key": 1, "concurrent_requests_per_tenant": 2,
        "requests_per_s_per_key": 0.001, "burst_per_key": 20,
        "requests_per_s_per_tenant": 0.001, "burst_per_tenant": 30,
    }  # fmt: skip
    with running_app(short_tmpdir("eg-lim-") / "d", worker={"enabled": False},
                     limits=limits) as app:  # fmt: skip
        yield app


@pytest.fixture(scope="module")
def tiny_pool() -> Iterator[App]:
    pool = {"min_size": 1, "max_size": 1, "timeout_s": 1}
    with running_app(short_tmpdir("eg-pool-") / "d", worker={"enabled": False},
                     pool=pool) as app:  # fmt: skip
        yield app


@pytest.fixture
def opened() -> Iterator[list[httpx.Client]]:
    clients: list[httpx.Client] = []
    yield clients
    for c in clients:
        c.close()


def _keys(srv: App, tenant: str, n: int, opened: list[httpx.Client]) -> list[httpx.Client]:
    """``n`` clients of a new tenant, each with its own writer key, each used once (so
    that its key is known to the server before a test holds the database)."""
    out = []
    with srv.client() as admin:
        assert admin.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
        for i in range(n):
            body = {"name": f"k{i}", "role": "writer", "tenant": tenant}
            r = admin.post("/v1/admin/apikeys", json=body)
            assert r.status_code == 201, r.text
            c = srv.client(r.json()["key"])
            assert c.get("/api/v2/sessions-ordered").status_code == 200
            opened.append(c)
            out.append(c)
    return out


class _Held:
    """Requests that wait in PostgreSQL on a lock of the users table until released."""

    def __init__(self, srv: App) -> None:
        self.srv = srv
        self.lock = srv.superuser()
        self.lock.execute("BEGIN")
        self.lock.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        self.threads: list[threading.Thread] = []
        self.statuses: list[int] = []

    def hold(self, client: httpx.Client) -> None:
        """Send a request that reads users; return once it waits on the lock."""

        def run() -> None:
            self.statuses.append(client.get("/api/v2/users/nobody").status_code)

        before = self._waiting()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        while self._waiting() <= before:
            assert t.is_alive(), self.statuses
            time.sleep(0.02)

    def _waiting(self) -> int:
        with psycopg.connect(self.srv.pg.dsn("postgres", "engram"), autocommit=True) as c:
            row = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
        return int(row[0]) if row else 0

    def release(self) -> list[int]:
        self.lock.execute("ROLLBACK")
        self.lock.close()
        for t in self.threads:
            t.join()
        return self.statuses


def test_a_key_over_its_concurrency_gets_429_others_go_on(
    limited: App, uid: str, opened: list[httpx.Client]
) -> None:
    a1, a2, a3 = _keys(limited, f"a-{uid}", 3, opened)
    (b,) = _keys(limited, f"b-{uid}", 1, opened)
    held = _Held(limited)
    try:
        held.hold(a1)
        r = a1.get("/api/v2/sessions-ordered")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "at once for this key" in r.json()["message"] and r.json()["reason"] == "concurrency"
        held.hold(a2)  # the tenant's second request at once: its limit
        r = a3.get("/api/v2/sessions-ordered")
        assert r.status_code == 429 and "for this tenant" in r.json()["message"]
        # Another tenant's key is not affected.
        assert b.get("/api/v2/sessions-ordered").status_code == 200
    finally:
        statuses = held.release()
    assert statuses == [404, 404]  # the held requests finished normally
    assert a1.get("/api/v2/sessions-ordered").status_code == 200  # slots given back


def test_a_key_over_its_rate_gets_429_with_retry_after(
    limited: App, uid: str, opened: list[httpx.Client]
) -> None:
    c1, c2 = _keys(limited, f"c-{uid}", 2, opened)  # one request each so far
    (b,) = _keys(limited, f"d-{uid}", 1, opened)
    for _ in range(19):  # the key's burst of 20
        assert c1.get("/api/v2/sessions-ordered").status_code == 200
    r = c1.get("/api/v2/sessions-ordered")
    assert r.status_code == 429 and r.json()["reason"] == "rate"
    assert "per second for this key" in r.json()["message"]
    assert int(r.headers["retry-after"]) >= 1
    for _ in range(9):  # the tenant's burst of 30, less the other key's 20 and its own 1
        assert c2.get("/api/v2/sessions-ordered").status_code == 200
    r = c2.get("/api/v2/sessions-ordered")
    assert r.status_code == 429 and "per second for this tenant" in r.json()["message"]
    assert b.get("/api/v2/sessions-ordered").status_code == 200


def test_no_connection_free_is_503_overloaded(
    tiny_pool: App, uid: str, opened: list[httpx.Client]
) -> None:
    a, b = _keys(tiny_pool, f"p-{uid}", 2, opened)
    held = _Held(tiny_pool)
    try:
        held.hold(a)  # holds the pool's one connection
        r = b.get("/api/v2/sessions-ordered")
        assert r.status_code == 503, r.text
        assert r.json()["message"] == "server overloaded: no database connection free within 1s"
        assert r.headers["retry-after"] == "1"
    finally:
        statuses = held.release()
    assert statuses == [404]
    assert b.get("/api/v2/sessions-ordered").status_code == 200

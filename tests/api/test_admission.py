"""One key or tenant cannot take the whole server: concurrency and rate limits answer 429
with Retry-After, and a pool with no connection free answers 503 "overloaded" (not
"database not reachable").

A request is held in flight by a lock on the users table (taken by the test as the
superuser): it waits in PostgreSQL, holding its slot and its connection, until released.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.fix_server import Server, short_tmpdir, start_server, stop_server

pytestmark = pytest.mark.integration


def _server(prefix: str, env: dict[str, str]) -> Iterator[Server]:
    root = short_tmpdir(prefix)
    srv = start_server(root / "d", api_key=secrets.token_urlsafe(24), extra=["--no-worker"],
                       env=env)  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    yield from _server("eg-lim-", {
        "ENGRAM_LIMITS__CONCURRENT_REQUESTS_PER_KEY": "1",
        "ENGRAM_LIMITS__CONCURRENT_REQUESTS_PER_TENANT": "2",
        "ENGRAM_LIMITS__REQUESTS_PER_S_PER_KEY": "0.001",
        "ENGRAM_LIMITS__BURST_PER_KEY": "20",
        "ENGRAM_LIMITS__REQUESTS_PER_S_PER_TENANT": "0.001",
        "ENGRAM_LIMITS__BURST_PER_TENANT": "30",
    })  # fmt: skip


@pytest.fixture(scope="module")
def tiny_pool() -> Iterator[Server]:
    yield from _server("eg-pool-", {
        "ENGRAM_POOL__MIN_SIZE": "1", "ENGRAM_POOL__MAX_SIZE": "1", "ENGRAM_POOL__TIMEOUT_S": "1",
    })  # fmt: skip


@pytest.fixture
def opened() -> Iterator[list[httpx.Client]]:
    clients: list[httpx.Client] = []
    yield clients
    for c in clients:
        c.close()


def _keys(srv: Server, tenant: str, n: int, opened: list[httpx.Client]) -> list[httpx.Client]:
    """``n`` clients of a new tenant, each with its own writer key, each used once (so
    that its key is known to the server before a test holds the database)."""
    out = []
    with srv.client() as admin:
        assert admin.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
        for i in range(n):
            body = {"name": f"k{i}", "role": "writer", "tenant": tenant}
            r = admin.post("/v1/admin/apikeys", json=body)
            assert r.status_code == 201, r.text
            c = httpx.Client(base_url=srv.base_url, timeout=60,
                             headers={"Authorization": f"Api-Key {r.json()['key']}"})  # fmt: skip
            assert c.get("/api/v2/sessions-ordered").status_code == 200
            opened.append(c)
            out.append(c)
    return out


class _Held:
    """Requests that wait in PostgreSQL on a lock of the users table until released."""

    def __init__(self, srv: Server) -> None:
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
    limited: Server, uid: str, opened: list[httpx.Client]
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
    limited: Server, uid: str, opened: list[httpx.Client]
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
    tiny_pool: Server, uid: str, opened: list[httpx.Client]
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

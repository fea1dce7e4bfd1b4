"""Two tenants through a real PgBouncer in transaction mode: 10,000 interleaved requests.

Both tenants use the same user and session ids and hammer the API at once, so their
transactions take turns on the same two server connections. Every response a tenant
gets is checked for the other tenant's marker (its id, written into every message,
user and session it owns); every probe at the other tenant's rows must be a 404 or
an empty result; at the end the tables are read as the superuser and every row must
sit in the tenant that wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import shutil
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.fix_pgbouncer import POOL_SIZE, Bouncer
from tests.fix_server import Server, short_tmpdir, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

logger = logging.getLogger(__name__)

REQUESTS = 10_000  # interleaved requests of the two tenants, deletes not counted
CONCURRENCY = 24  # requests in flight at once; the server's pool has 8 client connections
SHARED_USERS = ["ada", "bob", "cyd"]  # the same ids exist in both tenants
SESSIONS = {f"s{i}": SHARED_USERS[i % len(SHARED_USERS)] for i in range(6)}
DROPPED = [f"d{i}" for i in range(12)]  # sessions whose memory one tenant deletes
GONE = [f"gone{i}" for i in range(6)]  # users one tenant deletes
SEED_LINES = ["I live in Lisbon.", "I work at Acme as a nurse.", "I adopted a beagle."]


@dataclass
class Tenant:
    id: str
    key: str
    auditor: str
    # What the tenant owns: seeded message uuids by session, every message uuid it
    # wrote, facts and entities of "ada".
    messages: dict[str, set[str]] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)
    facts: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # its sessions whose memory it deletes
    gone: list[str] = field(default_factory=list)  # its users it deletes
    requests: int = 0

    @property
    def only_user(self) -> str:
        return f"only-{self.id}"

    @property
    def only_session(self) -> str:
        return f"only-{self.id}-s"

    def headers(self, n: int) -> dict[str, str]:
        return {"Authorization": f"Api-Key {self.key}", "X-Request-Id": f"{self.id}.{n}"}


@pytest.fixture(scope="module")
def server(bouncer: Bouncer) -> Iterator[Server]:
    """`engram serve` with its in-process worker, every connection through PgBouncer."""
    root = short_tmpdir("egpbt-")
    srv = start_server(root / "d", api_key=secrets.token_urlsafe(24),
                       extra=["--database-url", bouncer.dsn()],
                       # More requests at once per key than admission allows by default
                       # (tests/api/test_admission.py tests that); here they all must run.
                       env={"ENGRAM_POOL__MAX_SIZE": "8",
                            "ENGRAM_LIMITS__CONCURRENT_REQUESTS_PER_KEY": "0",
                            "ENGRAM_LIMITS__CONCURRENT_REQUESTS_PER_TENANT": "0"})  # fmt: skip
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()[-3000:]
    shutil.rmtree(root, ignore_errors=True)


def _tenant(admin: httpx.Client, tenant_id: str) -> Tenant:
    assert admin.post("/v1/admin/tenants", json={"id": tenant_id}).status_code == 201
    keys = []
    for role in ("writer", "auditor"):
        r = admin.post("/v1/admin/apikeys", json={"name": role, "role": role, "tenant": tenant_id})
        assert r.status_code == 201, r.text
        keys.append(r.json()["key"])
    return Tenant(tenant_id, *keys)


def _message(t: Tenant, text: str) -> dict[str, Any]:
    return {"uuid": str(uuidlib.uuid4()), "role": "Ada", "role_type": "user",
            "content": f"{text} ({t.id})"}  # fmt: skip


def _seed(server: Server, t: Tenant) -> None:
    """Users, sessions and messages under ids the other tenant uses too, plus one user
    and session only this tenant has."""
    with httpx.Client(base_url=server.base_url, headers=t.headers(-1), timeout=30) as c:
        for user in [*SHARED_USERS, *GONE, t.only_user]:
            r = c.post("/api/v2/users", json={"user_id": user, "metadata": {"owner": t.id}})
            assert r.status_code == 201, r.text
        sessions = {**SESSIONS, **dict.fromkeys(DROPPED, "bob"), t.only_session: t.only_user}
        for session, user in sessions.items():
            body = {"session_id": session, "user_id": user, "metadata": {"owner": t.id}}
            assert c.post("/api/v2/sessions", json=body).status_code == 201
            msgs = [_message(t, line) for line in SEED_LINES]
            r = c.post(f"/api/v2/sessions/{session}/memory", json={"messages": msgs})
            assert r.status_code == 200, r.text
            t.messages[session] = {m["uuid"] for m in msgs}
            t.written |= t.messages[session]


def _wait_for_graph(server: Server, t: Tenant) -> None:
    """The worker (polling through the pooler) extracts the seeds into facts."""
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=server.base_url, headers=t.headers(-1), timeout=30) as c:
        while time.monotonic() < deadline:
            graph = c.get("/v1/users/ada/graph").json()
            if len(graph["facts"]) >= 2:
                t.facts = [f["uuid"] for f in graph["facts"]]
                t.entities = [e["uuid"] for e in graph["entities"]]
                return
            time.sleep(0.5)
    raise AssertionError(f"no facts extracted for {t.id}: {graph}")


Op = tuple[str, str, dict[str, Any] | None, tuple[int, ...], str]  # method, path, body, ok, kind


def _ops(t: Tenant, o: Tenant, rng: random.Random, n: int) -> list[Op]:
    """n requests of tenant t: reads, writes and searches of its own rows, and probes at
    rows of tenant o (same ids, or ids only o has, or o's message/fact/entity uuids)."""
    shared = list(SESSIONS)
    own_msgs = {s: sorted(t.messages[s]) for s in shared}
    other_msgs = {s: sorted(o.messages[s]) for s in shared}
    z = "/api/v2"

    def own(i: int) -> Op:
        s = rng.choice(shared)
        user = SESSIONS[s]
        k = i % 16
        if k == 0:
            message = _message(t, f"Note {i}: the weather was mild.")
            t.written.add(message["uuid"])
            return "POST", f"{z}/sessions/{s}/memory", {"messages": [message]}, (200,), "write"
        if k == 1:
            return ("PATCH", f"{z}/users/{user}", {"metadata": {"owner": t.id, "n": i}}, (200,),
                    "patch")  # fmt: skip
        if k == 2:
            return ("PATCH", f"{z}/sessions/{s}", {"metadata": {"owner": t.id, "n": i}}, (200,),
                    "patch")  # fmt: skip
        if k == 3:
            m = rng.choice(own_msgs[s])
            return ("PATCH", f"{z}/sessions/{s}/messages/{m}", {"metadata": {"n": i}}, (200,),
                    "patch")  # fmt: skip
        if k == 4:
            return "GET", f"{z}/sessions/{s}/memory?lastn=20", None, (200,), "memory"
        if k == 5:
            return "GET", f"{z}/sessions/{s}/messages?limit=100", None, (200,), "messages"
        if k == 6:
            m = rng.choice(own_msgs[s])
            return "GET", f"{z}/sessions/{s}/messages/{m}", None, (200,), "message"
        if k == 7:
            return ("POST", f"{z}/sessions/search?limit=10",
                    {"text": "what was the weather like?", "user_id": user}, (200,),
                    "search")  # fmt: skip
        if k == 8:
            return ("POST", "/v1/search",
                    {"text": "where does Ada live?", "targets": ["messages", "facts", "entities"]},
                    (200,), "nsearch")  # fmt: skip
        if k == 9:
            return "GET", f"{z}/users-ordered?pageSize=100", None, (200,), "users"
        if k == 10:
            return "GET", f"{z}/sessions-ordered?page_size=100", None, (200,), "sessions"
        if k == 11:
            return "GET", f"{z}/users/{user}/sessions", None, (200,), "sessions"
        if k == 12:
            return "GET", f"{z}/users/{user}", None, (200,), "user"
        if k == 13:
            return "GET", f"{z}/sessions/{s}", None, (200,), "session"
        if k == 14:
            return "GET", "/v1/users/ada/graph", None, (200,), "graph"
        return "GET", f"{z}/facts/{rng.choice(t.facts)}", None, (200,), "fact"

    def probe(i: int) -> Op:
        s = rng.choice(shared)
        m = rng.choice(other_msgs[s])
        fact, entity = rng.choice(o.facts), rng.choice(o.entities)
        ou, os_ = o.only_user, o.only_session
        nope = (404,)
        return [
            ("GET", f"{z}/users/{ou}", None, nope, "probe"),
            ("PATCH", f"{z}/users/{ou}", {"metadata": {"owner": t.id}}, nope, "probe"),
            ("DELETE", f"{z}/users/{ou}", None, nope, "probe"),
            ("GET", f"{z}/users/{ou}/sessions", None, nope, "probe"),
            ("GET", f"{z}/sessions/{os_}", None, nope, "probe"),
            ("PATCH", f"{z}/sessions/{os_}", {"metadata": {"owner": t.id}}, nope, "probe"),
            ("POST", f"{z}/sessions/{os_}/memory",
             {"messages": [_message(t, "planted")]}, nope, "probe"),
            ("GET", f"{z}/sessions/{os_}/memory", None, nope, "probe"),
            ("GET", f"{z}/sessions/{os_}/messages", None, nope, "probe"),
            ("DELETE", f"{z}/sessions/{os_}/memory", None, nope, "probe"),
            ("POST", f"{z}/sessions", {"session_id": f"x{i}", "user_id": ou}, nope, "probe"),
            # o's message under the session id both tenants have
            ("GET", f"{z}/sessions/{s}/messages/{m}", None, nope, "probe"),
            ("PATCH", f"{z}/sessions/{s}/messages/{m}", {"metadata": {"owner": t.id}}, nope,
             "probe"),
            ("GET", f"{z}/facts/{fact}", None, nope, "probe"),
            ("DELETE", f"{z}/facts/{fact}", None, nope, "probe"),
            ("GET", f"/v1/facts/{fact}/episodes", None, nope, "probe"),
            ("GET", f"/v1/users/ada/entities/{entity}", None, nope, "probe"),
            ("GET", f"/v1/users/{ou}/graph", None, nope, "probe"),
            ("GET", f"/v1/sessions/{os_}/context", None, nope, "probe"),
            ("POST", f"{z}/sessions/search", {"text": "weather", "session_ids": [os_]}, (200,),
             "empty"),
        ][i % 20]  # fmt: skip

    ops = [own(i) if i % 3 else probe(i // 3) for i in range(n)]
    # Deletes of its own rows, under ids whose twins in o must survive.
    ops += [("DELETE", f"{z}/sessions/{s}/memory", None, (200,), "delete") for s in t.dropped]
    ops += [("DELETE", f"{z}/users/{u}", None, (200,), "delete") for u in t.gone]
    return ops


def _contents(kind: str, body: Any) -> list[str]:
    """The message texts of a response (each must carry its tenant's marker)."""
    if kind == "memory" or kind == "messages":
        return [m["content"] for m in body["messages"]]
    if kind == "message":
        return [body["content"]]
    if kind == "nsearch":
        return [h["message"]["content"] for h in body["results"] if h["kind"] == "message"]
    if kind == "search":
        return [h["message"]["content"] for h in body["results"]]
    return []


def _owners(kind: str, body: Any) -> list[str]:
    """The metadata owners of users and sessions in a response."""
    if kind == "users":
        return [u["metadata"]["owner"] for u in body["users"]]
    if kind == "sessions":
        rows = body["sessions"] if isinstance(body, dict) else body[0]
        return [s["metadata"]["owner"] for s in rows]
    if kind in ("user", "session"):
        return [body["metadata"]["owner"]]
    return []


class PoolWatch(threading.Thread):
    """Samples PgBouncer's SHOW POOLS while the load runs."""

    def __init__(self, bouncer: Bouncer) -> None:
        super().__init__(daemon=True)
        self.bouncer = bouncer
        self.done = threading.Event()
        self.max_clients = self.max_servers = self.max_waiting = 0

    def run(self) -> None:
        while not self.done.wait(0.2):
            for p in self.bouncer.show("POOLS"):
                if p["database"] == "engram" and p["user"] == "engram_app":
                    servers = sum(int(p[k]) for k in p if str(k).startswith("sv_"))
                    self.max_servers = max(self.max_servers, servers)
                    clients = int(p["cl_active"]) + int(p["cl_waiting"])
                    self.max_clients = max(self.max_clients, clients)
                    self.max_waiting = max(self.max_waiting, int(p["cl_waiting"]))


def _xacts(bouncer: Bouncer) -> int:
    stats = bouncer.show("STATS")
    return sum(int(r["total_xact_count"]) for r in stats if r["database"] == "engram")


async def _fire(server: Server, plan: list[tuple[Tenant, Tenant, Op]]) -> Counter[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    seen: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as http:

        async def one(n: int, t: Tenant, o: Tenant, op: Op) -> None:
            method, path, body, ok, kind = op
            async with gate:
                r = await http.request(method, path, json=body, headers=t.headers(n))
            where = f"{t.id} {method} {path}"
            assert r.status_code in ok, f"{where}: {r.status_code} {r.text[:300]}"
            data = r.json()
            if r.status_code == 404:  # an error that names what was asked, and no data
                assert set(data) <= {"message", "hint", "field"}, f"{where}: {data}"
            else:
                # Nothing of the other tenant, ever: its id marks all it owns.
                assert o.id not in r.text, f"{where} leaked {o.id}: {r.text[:300]}"
                for text in _contents(kind, data):
                    assert text.endswith(f"({t.id})"), f"{where}: {text!r}"
                assert all(owner == t.id for owner in _owners(kind, data)), where
                if kind == "empty":
                    assert data["results"] in ([], None), where
            seen[kind] += 1
            t.requests += 1

        await asyncio.gather(*(one(n, t, o, op) for n, (t, o, op) in enumerate(plan)))
    return seen


@pytest.mark.timeout(900)  # ~3 minutes on a busy 2-core machine; the default is 300 s
def test_two_tenants_share_pgbouncer_server_connections_and_nothing_else(
    server: Server, bouncer: Bouncer
) -> None:
    uid = secrets.token_hex(3)
    with server.client() as admin:  # the bootstrap key: platform admin
        a, b = _tenant(admin, f"alpha-{uid}"), _tenant(admin, f"bravo-{uid}")
    a.dropped, b.dropped = DROPPED[::2], DROPPED[1::2]
    a.gone, b.gone = GONE[:3], GONE[3:]
    for t in (a, b):
        _seed(server, t)
    for t in (a, b):
        _wait_for_graph(server, t)

    rng = random.Random(6)
    plan = [(a, b, op) for op in _ops(a, b, rng, REQUESTS // 2)]
    plan += [(b, a, op) for op in _ops(b, a, rng, REQUESTS // 2)]
    rng.shuffle(plan)  # interleaved: both tenants' requests in flight at once
    xacts_before = _xacts(bouncer)
    watch = PoolWatch(bouncer)
    watch.start()
    started = time.monotonic()
    try:
        seen = asyncio.run(_fire(server, plan))
    finally:
        watch.done.set()
        watch.join()
    elapsed = time.monotonic() - started
    served = _xacts(bouncer) - xacts_before
    logger.info(
        "%d requests in %.1f s (%.0f/s), %d pooled transactions, clients <= %d, servers <= %d,"
        " waiting <= %d; %s", len(plan), elapsed, len(plan) / elapsed, served,
        watch.max_clients, watch.max_servers, watch.max_waiting, dict(seen),
    )  # fmt: skip

    assert a.requests + b.requests == len(plan) >= REQUESTS
    assert seen["probe"] + seen["empty"] >= REQUESTS // 3 - 2 and seen["write"] > REQUESTS // 30
    # The pooler really multiplexed: many client connections, at most POOL_SIZE servers,
    # far more transactions than server connections.
    assert 0 < watch.max_servers <= POOL_SIZE
    assert watch.max_clients > POOL_SIZE
    assert served >= len(plan) > 100 * POOL_SIZE

    _check_rows(bouncer, a, b)
    for t in (a, b):
        with httpx.Client(base_url=server.base_url, timeout=60,
                          headers={"Authorization": f"Api-Key {t.auditor}"}) as c:  # fmt: skip
            verdict = c.get("/v1/audit/verify").json()
        assert verdict["ok"] is True and verdict["length"] >= t.requests, verdict


def _check_rows(bouncer: Bouncer, a: Tenant, b: Tenant) -> None:
    """As the superuser (no RLS): every row sits in the tenant that wrote it."""
    ids = [a.id, b.id]
    with bouncer.pg.superuser_conn() as conn:

        def rows(query: str) -> list[tuple[Any, ...]]:
            return conn.execute(query, (ids,)).fetchall()

        msgs = rows("SELECT tenant_id, uuid::text, content, metadata FROM messages"
                    " WHERE tenant_id = ANY(%s)")  # fmt: skip
        users = rows("SELECT tenant_id, user_id, metadata FROM users WHERE tenant_id = ANY(%s)")
        sessions = rows(
            "SELECT tenant_id, session_id, metadata FROM sessions WHERE tenant_id = ANY(%s)"
        )
        facts = rows("SELECT tenant_id, uuid::text, episodes::text[] FROM facts"
                     " WHERE tenant_id = ANY(%s)")  # fmt: skip
        facts += rows("SELECT tenant_id, uuid::text, message_uuids::text[] FROM episodes"
                      " WHERE tenant_id = ANY(%s)")  # fmt: skip
        # The requests of the load (numbered from 0), by the tenant whose chain has them.
        audit = rows("""SELECT tenant_id, split_part(request_id, '.', 1), count(*)
                        FROM audit_log WHERE split_part(request_id, '.', 1) = ANY(%s)
                          AND split_part(request_id, '.', 2) <> '-1' GROUP BY 1, 2""")
    for tenant, _, content, metadata in msgs:
        # Every message is in its writer's tenant (its marker), none patched by the other.
        assert content.endswith(f"({tenant})"), (tenant, content)
        assert "owner" not in metadata, (tenant, metadata)
    for tenant, _, metadata in users + sessions:
        assert metadata["owner"] == tenant, (tenant, metadata)
    for t in (a, b):
        mine = {u for tenant, u, *_ in msgs if tenant == t.id}
        # Exactly what it wrote, less the sessions it emptied itself: nothing planted in
        # the other's session, and the other's deletes under the same ids took nothing.
        dropped = set().union(*(t.messages[s] for s in t.dropped))
        assert mine == t.written - dropped
        assert {u for tenant, u, _ in users if tenant == t.id} == {
            *SHARED_USERS,
            *(set(GONE) - set(t.gone)),
            t.only_user,
        }
        # Facts and extraction episodes cite only messages their own tenant wrote.
        for tenant, row, sources in facts:
            if tenant == t.id:
                assert set(sources) <= t.written, (row, sources)
    # Every request of the load is on its own tenant's audit chain, and only there.
    assert sorted(audit) == sorted([(a.id, a.id, a.requests), (b.id, b.id, b.requests)])

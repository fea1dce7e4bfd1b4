"""Every request leaves an audit record: refusals, bytes PostgreSQL cannot store, floods
of anonymous requests, and records the database refuses for a while."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tests.fix_app import App, AppTransport, running_app
from tests.fix_server import Server, short_tmpdir, start_server, stop_server

WINDOW_S = 3


@pytest.fixture(scope="module")
def own() -> Iterator[App]:
    """An app of its own: these tests count anonymous requests."""
    root = short_tmpdir("eg-aua-")
    with running_app(root / "d", worker={"enabled": False},
                     audit={"anonymous_window_s": WINDOW_S}) as app:  # fmt: skip
        yield app


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    """A server of its own, whose log the test reads: it breaks the audit log."""
    root = short_tmpdir("eg-au-")
    server = start_server(
        root / "d", api_key=secrets.token_urlsafe(24), extra=["--no-worker"],
        env={"ENGRAM_AUDIT__ANONYMOUS_WINDOW_S": str(WINDOW_S)},
    )  # fmt: skip
    yield server
    assert stop_server(server) == 0, server.log.read_text()


def _rows(srv: App | Server, *, client: str = "", request_ids: tuple[str, ...] = ()) -> list[Any]:
    """The records from ``client`` or with one of ``request_ids``, in chain order."""
    with srv.superuser() as conn:
        return conn.execute(
            "SELECT actor, action, resource, status, outcome, reason, client, details"
            " FROM audit_log WHERE client = %s OR request_id = ANY(%s) ORDER BY seq",
            (client, list(request_ids)),
        ).fetchall()


def _until(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("not reached in time")


def _from(address: str, srv: Server, **kw: Any) -> httpx.Client:
    """A client whose requests come from ``address`` (any 127.x.y.z is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=srv.base_url, transport=transport, timeout=30, **kw)


def _from_in_process(address: str, app: App) -> httpx.Client:
    """A client of the app in process whose requests come from ``address``, as the ASGI
    scope of a server says where a connection came from."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app.asgi({**scope, "client": (address, 50000)}, receive, send)

    return httpx.Client(base_url=app.base_url, transport=AppTransport(asgi, app.loop), timeout=30)


def test_a_refused_request_whose_path_holds_nul_leaves_a_record(own: App) -> None:
    rid = secrets.token_hex(8)
    with _from_in_process("127.0.0.3", own) as anonymous:
        r = anonymous.get("/api/v2/users/a%00b%ff/sessions", headers={"X-Request-Id": rid})
        assert r.status_code == 401
        r = anonymous.get("/api/v2/no%00such", headers={"X-Request-Id": rid + "n"})
        assert r.status_code == 404
    with own.client() as http:
        r = http.get("/api/v2/sessions/s%00x", headers={"X-Request-Id": rid + "a"})
        assert r.status_code == 400  # the database refuses the id
    rows = _rows(own, request_ids=(rid, rid + "n", rid + "a"))
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("anonymous", "GET /api/v2/users/{user_id}/sessions", 401),
        ("anonymous", "GET unmatched", 404),
        ("bootstrap-key", "GET /api/v2/sessions/{session_id}", 400),
    ]
    assert rows[1][2] == "/api/v2/no\\x00such"  # escaped, not refused
    assert rows[0][2].startswith("/api/v2/users/user:")  # a one-off pseudonym


def test_a_flood_of_anonymous_requests_leaves_few_records_that_count_them_all(
    own: App,
) -> None:
    address, sent = "127.0.0.2", 500
    started = time.monotonic()
    with _from_in_process(address, own) as anonymous:
        for n in range(sent):
            assert anonymous.get(f"/api/v2/users/u{n}").status_code == 401
    windows = (time.monotonic() - started) // WINDOW_S + 2  # it may straddle them

    def counted() -> list[tuple[Any, ...]] | None:
        rows = _rows(own, client=address)
        total = sum(int(r[7]["count"]) if r[1] == "anonymous requests" else 1 for r in rows)
        return rows if total == sent else None

    rows = _until(counted)
    summaries = [r for r in rows if r[1] == "anonymous requests"]
    assert summaries and len(rows) <= 11 * windows  # 10 of its own per window, a summary
    details = summaries[0][7]
    assert details["statuses"] == {"401": details["count"]}
    assert details["actions"] == {"GET /api/v2/users/{user_id}": details["count"]}
    assert summaries[0][4] == "denied" and details["first"] <= details["last"]


@pytest.mark.integration  # it reads the server's log
def test_when_the_log_refuses_records_writes_are_answered_and_reads_withheld(
    srv: Server,
) -> None:
    """The database refuses every audit insert for a while (a trigger raising): a write
    that committed is answered as it is, flagged; a read is not served; both are in the
    server log at once and in the chain, marked late, when it accepts records again."""
    with srv.superuser() as conn:
        conn.execute(
            "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'audit storage unavailable'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log"
            " FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()"
        )
    name = f"u-{secrets.token_hex(4)}"
    try:
        with srv.client() as http:
            write = http.post("/api/v2/users", json={"user_id": name})
            read = http.get(f"/api/v2/users/{name}")
            with _from("127.0.0.4", srv) as anonymous:
                refused = anonymous.get("/api/v2/users-ordered")
    finally:
        with srv.superuser() as conn:
            conn.execute("DROP TRIGGER test_refuse_audit ON audit_log")
            conn.execute("DROP FUNCTION test_refuse_audit()")
    assert write.status_code == 201 and write.headers["x-audit-record"] == "delayed"
    assert read.status_code == 500 and "nothing is served" in read.json()["message"]
    assert name not in read.text
    assert refused.status_code == 401
    ids = [r.headers["x-request-id"] for r in (write, read, refused)]
    log = srv.log.read_text()
    for rid in ids:
        assert f'"request_id":"{rid}"' in log
    with srv.client() as http:
        assert http.get(f"/api/v2/users/{name}").json()["user_id"] == name  # committed

    rows = _until(lambda: (r := _rows(srv, request_ids=tuple(ids))) and len(r) == 3 and r)
    by_action = {r[1]: r for r in rows}
    assert by_action["POST /api/v2/users"][3] == 201
    assert by_action["GET /api/v2/users/{user_id}"][3:5] == (500, "error")
    assert by_action["GET /api/v2/users-ordered"][3] == 401
    assert all(r[7]["late"] is True for r in rows)
    with srv.client() as http:
        assert http.get("/v1/audit/verify").json()["ok"] is True

"""Per-tenant policies and erasure: one tenant's lifecycle never touches another's rows."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fix_server import Server
from tests.lifecycle.conftest import age, cli_json, conversation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def admins(http: httpx.Client, server: Server, uid: str) -> Iterator[tuple[httpx.Client, ...]]:
    clients = []
    for t in (f"la-{uid}", f"lb-{uid}"):
        assert http.post("/v1/admin/tenants", json={"id": t}).status_code == 201
        r = http.post("/v1/admin/apikeys", json={"name": "admin", "role": "admin", "tenant": t})
        assert r.status_code == 201, r.text
        clients.append(
            httpx.Client(base_url=server.base_url, timeout=30,
                         headers={"Authorization": f"Api-Key {r.json()['key']}"})
        )  # fmt: skip
    yield tuple(clients)
    for c in clients:
        c.close()


def _messages(server: Server, tenant: str, user: str) -> int:
    with server.superuser() as conn:
        row = conn.execute(
            "SELECT count(*) FROM messages WHERE tenant_id = %s AND user_id = %s", (tenant, user)
        ).fetchone()
    return int(row[0]) if row else 0


def test_policies_and_erasure_stay_inside_their_tenant(
    server: Server, admins: tuple[httpx.Client, ...], uid: str
) -> None:
    a, b = admins
    ta, tb = f"la-{uid}", f"lb-{uid}"
    conversation(server, a, "ada", [f"sa-{uid}"], uid)
    conversation(server, b, "ada", [f"sb-{uid}"], uid)  # same user id, other tenant

    r = a.put("/v1/admin/retention", json={"retention_days": 30, "action": "delete"})
    assert r.status_code == 200, r.text
    assert b.get("/v1/admin/retention").json()["source"] == "config"

    # Both sessions idle 40 days: past A's 30, within B's default 90. The job visits
    # every registered tenant with its own policy.
    age(server, [f"sa-{uid}", f"sb-{uid}"], days=40)
    report = cli_json(server, "retention", "run")
    assert report[ta]["deleted"] == 1 and report[tb]["deleted"] == 0
    assert a.get(f"/api/v2/sessions/sa-{uid}").status_code == 404
    assert b.get(f"/api/v2/sessions/sb-{uid}").status_code == 200

    before_b = _messages(server, tb, "ada")
    assert before_b == 5
    receipt = b.delete("/v1/users/ada", params={"erase": "true"}).json()
    assert receipt["tenant_id"] == tb and receipt["removed"]["messages"] == 5
    assert b.get("/api/v2/users/ada").status_code == 404
    assert a.get("/api/v2/users/ada").status_code == 200  # A's ada is another person
    with server.superuser() as conn:
        receipts = conn.execute(
            "SELECT tenant_id FROM erasure_receipts WHERE user_id = 'ada'"
        ).fetchall()
    assert (tb,) in receipts and (ta,) not in receipts

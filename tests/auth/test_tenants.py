"""Tenants, API keys and roles through the API (the app in process): isolation, 401/403,
revocation."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.fix_app import App


def _tenant(client: httpx.Client, tenant: str) -> None:
    assert client.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201


def _key(client: httpx.Client, tenant: str, role: str, **extra: object) -> str:
    r = client.post(
        "/v1/admin/apikeys", json={"name": role, "role": role, "tenant": tenant, **extra}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.fixture
def two(client: httpx.Client, app: App, uid: str) -> Iterator[tuple[httpx.Client, ...]]:
    _tenant(client, f"a-{uid}")
    _tenant(client, f"b-{uid}")
    key_a, key_b = _key(client, f"a-{uid}", "writer"), _key(client, f"b-{uid}", "writer")
    with app.client(key_a) as a, app.client(key_b) as b:
        yield a, b


def test_two_tenants_see_nothing_of_each_other(
    two: tuple[httpx.Client, ...], app: App, uid: str
) -> None:
    a, b = two
    assert a.post("/api/v2/users", json={"user_id": "alice"}).status_code == 201
    assert a.post("/api/v2/sessions", json={"session_id": "s1", "user_id": "alice"}).is_success
    msg = {"messages": [{"role_type": "user", "content": "my locker code is 4711"}]}
    assert a.post("/api/v2/sessions/s1/memory", json=msg).is_success
    # B: the same ids do not exist for it, and it cannot change or delete A's rows.
    assert b.get("/api/v2/users/alice").status_code == 404
    assert b.get("/api/v2/sessions/s1").status_code == 404
    assert b.get("/api/v2/sessions/s1/memory").status_code == 404
    assert b.patch("/api/v2/users/alice", json={"email": "x@y"}).status_code == 404
    assert b.delete("/api/v2/users/alice").status_code == 404
    assert b.delete("/api/v2/sessions/s1/memory").status_code == 404
    assert b.get("/api/v2/users-ordered").json()["users"] in (None, [])
    found = b.post("/api/v2/sessions/search", json={"text": "locker code"})
    assert found.status_code == 200 and not found.json().get("results")
    found = b.post("/v1/search", json={"text": "locker code"})
    assert found.status_code == 200 and found.json()["results"] == []
    found = a.post("/v1/search", json={"text": "locker code"})
    assert found.status_code == 200 and found.json()["results"]
    # B may use the same ids for its own rows; A's stay as they were.
    assert b.post("/api/v2/users", json={"user_id": "alice"}).status_code == 201
    assert a.get("/api/v2/sessions/s1/memory").json()["messages"][0]["content"].endswith("4711")
    # In SQL as the app role: B's context sees none of A's rows and cannot write A's.
    with psycopg.connect(app.pg.dsn("engram_app"), autocommit=True) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (f"b-{uid}",))
        for table in ("users", "sessions", "messages", "audit_log", "api_keys"):
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE tenant_id = %s",  # noqa: S608
                (f"a-{uid}",),
            ).fetchone()
            assert row == (0,), table
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO users (tenant_id, user_id) VALUES (%s, 'mallory')", (f"a-{uid}",)
            )
        conn.execute("UPDATE users SET email = 'x' WHERE tenant_id = %s", (f"a-{uid}",))
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (f"a-{uid}",))
        row = conn.execute("SELECT email FROM users WHERE user_id = 'alice'").fetchone()
        assert row == (None,)


def test_roles_are_enforced_with_a_reason_and_audited(
    client: httpx.Client, app: App, uid: str
) -> None:
    t = f"r-{uid}"
    _tenant(client, t)
    with app.client(_key(client, t, "reader")) as reader:
        r = reader.post("/api/v2/users", json={"user_id": "u"})
        assert r.status_code == 403
        assert r.json()["reason"] == "permission" and "memory:write" in r.json()["message"]
        assert reader.get("/api/v2/users-ordered").status_code == 200
        assert reader.get("/v1/audit/events").status_code == 403
        request_id = f"probe-{uid}"
        reader.get("/v1/admin/apikeys", headers={"X-Request-Id": request_id})
    with app.client(_key(client, t, "auditor")) as auditor:
        assert auditor.get("/api/v2/users-ordered").status_code == 403
        events = auditor.get("/v1/audit/events", params={"limit": 1000}).json()["events"]
        assert auditor.get("/v1/audit/verify").json()["ok"] is True
    denied = [e for e in events if e["request_id"] == request_id]
    assert len(denied) == 1 and denied[0]["outcome"] == "denied" and denied[0]["status"] == 403
    assert "keys:manage" in denied[0]["reason"] and denied[0]["actor"].startswith("apikey:")
    reads = [e for e in events if e["action"] == "GET /api/v2/users-ordered"]
    assert reads and reads[0]["outcome"] == "success" and reads[0]["client"] == "127.0.0.1"
    with app.client(_key(client, t, "admin")) as admin:
        # A tenant admin manages its own keys, not tenants nor other tenants' keys.
        assert admin.post("/v1/admin/tenants", json={"id": f"x-{uid}"}).status_code == 403
        other = {"name": "x", "role": "reader", "tenant": "default"}
        assert admin.post("/v1/admin/apikeys", json=other).status_code == 403
        protected = {"name": "x", "role": "reader", "read_protected": True}
        assert admin.post("/v1/admin/apikeys", json=protected).status_code == 403
        assert admin.get("/v1/whoami").json()["can_read_protected"] is False
        assert len(admin.get("/v1/admin/apikeys").json()["keys"]) == 3


def test_keys_are_stored_as_hashes_and_can_be_revoked_or_expire(
    client: httpx.Client, app: App, uid: str
) -> None:
    t = f"k-{uid}"
    _tenant(client, t)
    key = _key(client, t, "writer")
    _, key_id, secret = key.split("_", 2)  # the secret itself may contain "_"
    with app.superuser() as conn:
        row = conn.execute("SELECT * FROM api_keys WHERE key_id = %s", (key_id,)).fetchone()
    assert row is not None and not any(secret in str(v) for v in row)
    with app.client(key) as c:
        assert c.get("/v1/whoami").json()["tenant"] == t
        bad = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        r = c.get("/v1/whoami", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.json()["message"] == "invalid API key"
        assert client.delete(f"/v1/admin/apikeys/{key_id}").status_code == 404  # other tenant
        with app.client(_key(client, t, "admin")) as admin:
            assert admin.delete(f"/v1/admin/apikeys/{key_id}").json()["revoked_at"]
        r = c.get("/v1/whoami")
        assert r.status_code == 401 and "revoked" in r.json()["message"]
    short = _key(client, t, "reader", expires_in_days=2 / 86400)
    with app.client(short) as c:
        assert c.get("/v1/whoami").status_code == 200
        time.sleep(2.5)
        r = c.get("/v1/whoami")
        assert r.status_code == 401 and "expired" in r.json()["message"]


def test_a_disabled_tenant_gets_403_until_enabled(client: httpx.Client, app: App, uid: str) -> None:
    t = f"d-{uid}"
    _tenant(client, t)
    with app.client(_key(client, t, "admin")) as c:
        assert c.get("/v1/whoami").status_code == 200
        assert c.post(f"/v1/admin/tenants/{t}/disable").status_code == 403  # not platform
        assert client.post(f"/v1/admin/tenants/{t}/disable").json()["status"] == "disabled"
        r = c.get("/api/v2/users-ordered")
        assert r.status_code == 403 and r.json()["reason"] == "tenant_disabled"
        listed = {x["id"]: x["status"] for x in client.get("/v1/admin/tenants").json()["tenants"]}
        assert listed[t] == "disabled"
        assert client.post(f"/v1/admin/tenants/{t}/enable").status_code == 200
        assert c.get("/api/v2/users-ordered").status_code == 200


def test_without_credentials_401(app: App) -> None:
    with app.client(anonymous=True) as anonymous:
        r = anonymous.get("/api/v2/users-ordered")
        assert r.status_code == 401 and "Authorization" in r.json()["hint"]
        r = anonymous.get("/v1/whoami", headers={"Authorization": "Api-Key nope"})
        assert r.status_code == 401
        assert anonymous.post("/v1/admin/tenants", json={"id": "zz"}).status_code == 401


def test_a_tenants_user_and_session_ids_do_not_move_with_another_tenants_writes(
    two: tuple[httpx.Client, ...],
) -> None:
    """Zep's integer ids count per tenant: they tell a tenant nothing of the others."""
    a, b = two

    def new_ids(client: httpx.Client, name: str) -> tuple[int, int]:
        user = client.post("/api/v2/users", json={"user_id": name})
        session = client.post("/api/v2/sessions", json={"session_id": name, "user_id": name})
        assert user.status_code == 201 and session.is_success, (user.text, session.text)
        return int(user.json()["id"]), int(session.json()["id"])

    first = new_ids(a, "a1")
    for n in range(5):
        new_ids(b, f"b{n}")
    second = new_ids(a, "a2")
    assert second == (first[0] + 1, first[1] + 1)
    assert a.get("/api/v2/users/a1").json()["id"] == first[0]  # stable across reads
    # Each tenant counts on its own; both started at the same place.
    assert b.get("/api/v2/users/b0").json()["id"] == first[0]

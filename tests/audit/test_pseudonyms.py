"""The audit log names users and sessions by pseudonym: resolvable while they exist,
meaningless once they are erased, and the chain still verifies."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import orjson
import pytest

from tests.fix_server import ENGRAM, Server

pytestmark = pytest.mark.integration


def _export(server: Server, tenant: str, *extra: str) -> list[dict[str, Any]]:
    out = server.data_dir.parent / f"audit-{tenant}.jsonl"
    done = subprocess.run(
        [ENGRAM, "audit", "export", "--tenant", tenant, "-o", str(out), *extra,
         "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in out.read_text().splitlines()]


def _engram(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENGRAM, *args, "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _by_action(rows: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["action"] == action]


def test_records_carry_pseudonyms_that_erasure_unlinks(
    http: httpx.Client, server: Server, uid: str, request: pytest.FixtureRequest
) -> None:
    tenant = f"ps-{uid}"
    assert http.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
    key = http.post("/v1/admin/apikeys", json={"name": "w", "role": "admin", "tenant": tenant})
    t = httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Api-Key {key.json()['key']}"}
    )
    request.addfinalizer(t.close)
    user, session = f"alice-{uid}", f"chat-{uid}"
    assert t.post("/api/v2/users", json={"user_id": user}).status_code == 201
    assert t.post("/api/v2/sessions", json={"session_id": session, "user_id": user}).is_success
    for _ in range(2):
        assert t.get(f"/api/v2/users/{user}").status_code == 200
        assert t.get(f"/api/v2/sessions/{session}/messages").status_code == 200
    assert t.get(f"/api/v2/users/nobody-{uid}").status_code == 404

    rows = _export(server, tenant, "--resolve")
    assert not [r for r in rows if user in r["resource"] or session in r["resource"]]
    users = _by_action(rows, "GET /api/v2/users/{user_id}")
    sessions = _by_action(rows, "GET /api/v2/sessions/{session_id}/messages")
    ok = [r for r in users if r["status"] == 200]
    # One lasting pseudonym per subject, which --resolve maps back while it exists.
    assert len({r["resource"] for r in ok}) == 1 and len({r["resource"] for r in sessions}) == 1
    alias = ok[0]["resource"].rsplit("/", 1)[1]
    assert alias.startswith("user:") and ok[0]["subjects"] == {alias: user}
    s_alias = sessions[0]["resource"].split("/")[4]
    assert s_alias.startswith("session:") and sessions[0]["subjects"] == {s_alias: session}
    # A user who does not exist gets a one-off pseudonym that maps to nobody.
    [missing] = [r for r in users if r["status"] == 404]
    assert missing["resource"] != ok[0]["resource"] and missing["subjects"] == {}
    with server.superuser() as conn:
        held = conn.execute(
            "SELECT count(*) FROM audit_subjects WHERE tenant_id = %s AND subject_id LIKE %s",
            (tenant, f"nobody-{uid}"),
        ).fetchone()
    assert held == (0,)

    # Auditors get the same through the API.
    api = t.get("/v1/audit/events", params={"resolve": "true", "limit": 1000})
    assert api.status_code == 200, api.text
    assert {alias: user} in [e["subjects"] for e in api.json()["events"]]

    # Without --resolve the export holds no id at all.
    plain = orjson.dumps(_export(server, tenant)).decode()
    assert user not in plain and session not in plain

    assert t.delete(f"/v1/users/{user}", params={"erase": "true"}).status_code == 200
    after = _export(server, tenant, "--resolve")
    assert user not in orjson.dumps(after).decode() and session not in orjson.dumps(after).decode()
    assert all(r["subjects"] == {} for r in after)
    assert [r["hash"] for r in after[: len(rows)]] == [r["hash"] for r in rows]  # nothing rewritten
    verified = _engram(server, "audit", "verify", "--tenant", tenant)
    said = verified.stdout + verified.stderr
    assert verified.returncode == 0 and f"ok {tenant}" in said, said

"""Tampering with the audit table by a superuser is found by `engram audit verify` (the CLI
beside a real server); the roles the app uses cannot change the log (the app in process)."""

from __future__ import annotations

import itertools
import stat
import subprocess

import httpx
import orjson
import psycopg
import pytest

from tests.fix_app import App
from tests.fix_server import ENGRAM, Server


def _tenant_with_records(http: httpx.Client, server: Server, tenant: str, n: int = 8) -> None:
    assert http.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
    r = http.post("/v1/admin/apikeys", json={"name": "t", "role": "reader", "tenant": tenant})
    headers = {"Authorization": f"Api-Key {r.json()['key']}"}
    for _ in range(n):
        assert httpx.get(f"{server.base_url}/v1/whoami", headers=headers).status_code == 200


def _engram(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENGRAM, "audit", *args, "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _tamper(server: Server, statement: str, *params: object) -> None:
    with server.superuser() as conn:
        conn.execute("SET session_replication_role = replica")  # skips the triggers
        conn.execute(statement, params)


def test_the_app_role_and_the_owner_cannot_change_the_log(client: httpx.Client, app: App) -> None:
    assert client.get("/v1/whoami").status_code == 200  # at least one record exists
    with psycopg.connect(app.pg.dsn("engram_app"), autocommit=True) as conn:
        conn.execute("SELECT set_config('app.tenant_id', 'default', false)")
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE audit_log")
    with psycopg.connect(app.pg.dsn("engram_owner"), autocommit=True) as conn:
        conn.execute("SELECT set_config('app.tenant_id', 'default', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("TRUNCATE audit_log")


@pytest.mark.integration
def test_verify_names_every_kind_of_tampering(http: httpx.Client, server: Server, uid: str) -> None:
    t = {k: f"{k}-{uid}" for k in ("clean", "upd", "del", "swap", "ins", "trunc")}
    for tenant in t.values():
        _tenant_with_records(http, server, tenant)
    ok = _engram(server, "verify", "--tenant", t["clean"])
    assert ok.returncode == 0, ok.stderr
    assert f"ok {t['clean']}: 10 records" in ok.stderr
    # A checkpoint of the chain before anyone cuts its end off.
    assert _engram(server, "checkpoint", "--tenant", t["trunc"]).returncode == 0

    _tamper(server, "UPDATE audit_log SET outcome = 'denied' WHERE tenant_id = %s AND seq = 4",
            t["upd"])  # fmt: skip
    _tamper(server, "DELETE FROM audit_log WHERE tenant_id = %s AND seq IN (5, 6)", t["del"])
    for old, new in ((3, 1000), (7, 3), (1000, 7)):  # records 3 and 7 change places
        _tamper(server, "UPDATE audit_log SET seq = %s WHERE tenant_id = %s AND seq = %s",
                new, t["swap"], old)  # fmt: skip
    _tamper(
        server,
        """INSERT INTO audit_log (tenant_id, seq, at, actor, action, resource, outcome,
                                  prev_hash, hash)
           SELECT tenant_id, 11, at, 'mallory', action, resource, outcome, prev_hash, hash
           FROM audit_log WHERE tenant_id = %s AND seq = 10""",
        t["ins"],
    )
    _tamper(server, "DELETE FROM audit_log WHERE tenant_id = %s AND seq > 7", t["trunc"])

    out = _engram(server, "verify")
    assert out.returncode == 1
    text = " ".join(out.stderr.split())
    assert f"ok {t['clean']}" in text
    for tenant in (t["upd"], t["del"], t["swap"], t["ins"], t["trunc"]):
        assert f"TAMPERED {tenant}" in text
    lines = out.stderr.split("TAMPERED")
    by_tenant = {ln.split(":")[0].strip(): " ".join(ln.split()) for ln in lines[1:]}
    assert "record 4: changed" in by_tenant[t["upd"]]
    assert "record 5: missing" in by_tenant[t["del"]] and "5..6" in by_tenant[t["del"]]
    assert "record 3: changed" in by_tenant[t["swap"]]
    assert "record 7: changed" in by_tenant[t["swap"]]
    assert "record 11: changed" in by_tenant[t["ins"]]
    assert "record 8: truncated" in by_tenant[t["trunc"]]
    assert "default" not in by_tenant  # nothing else is disturbed


@pytest.mark.integration
def test_export_writes_json_lines(http: httpx.Client, server: Server, uid: str) -> None:
    tenant = f"exp-{uid}"
    _tenant_with_records(http, server, tenant, n=3)
    out = server.data_dir.parent / f"audit-{uid}.jsonl"
    done = _engram(server, "export", "--tenant", tenant, "-o", str(out))
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["action"] == "GET /v1/whoami" and rows[-1]["tenant_id"] == tenant
    assert all(r["prev_hash"] == p["hash"] for p, r in itertools.pairwise(rows))
    key_file = server.data_dir / "audit" / "checkpoint-ed25519.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

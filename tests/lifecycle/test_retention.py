"""A tenant's retention policy through the admin API (the app in process) and the CLI (beside
a real server), applied by the job."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fix_app import App
from tests.fix_server import Server
from tests.lifecycle.conftest import age, cli_json, conversation


def _reset(db: App | Server) -> None:
    with db.superuser() as conn:  # other tests expect the configured defaults
        conn.execute("DELETE FROM retention_policies")


@pytest.fixture
def app_policy_reset(app: App) -> Iterator[None]:
    yield
    _reset(app)


@pytest.fixture
def policy_reset(server: Server) -> Iterator[None]:
    yield
    _reset(server)


def test_policy_defaults_changes_and_bad_input(
    client: httpx.Client, app_policy_reset: None
) -> None:
    r = client.get("/v1/admin/retention")
    assert r.json() | {"updated_at": None, "updated_by": None} == {
        "retention_days": 90, "action": "archive", "fact_cleanup_days": None,
        "source": "config", "updated_at": None, "updated_by": None,
    }  # fmt: skip
    for body, field in (
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": "ninety"}, "retention_days"),
        ({"action": "shred"}, "action"),
        ({"fact_cleanup_days": -3}, "fact_cleanup_days"),
        ({"keep": True}, "keep"),
    ):
        bad = client.put("/v1/admin/retention", json=body)
        assert bad.status_code == 400 and bad.json()["field"] == field, bad.text
        assert bad.json()["hint"]
    assert client.get("/v1/admin/retention").json()["source"] == "config"  # nothing written

    r = client.put("/v1/admin/retention", json={"retention_days": 30, "fact_cleanup_days": 10})
    assert r.status_code == 200, r.text
    got = client.get("/v1/admin/retention").json()
    assert (got["retention_days"], got["action"], got["fact_cleanup_days"]) == (30, "archive", 10)
    assert got["source"] == "tenant" and got["updated_by"] == "bootstrap-key"
    r = client.put("/v1/admin/retention", json={"retention_days": None})  # keep forever
    assert r.json()["retention_days"] is None and r.json()["fact_cleanup_days"] == 10


@pytest.mark.integration
@pytest.mark.slow
def test_delete_action_and_fact_cleanup_follow_the_tenant_policy(
    server: Server, http: httpx.Client, uid: str, policy_reset: None
) -> None:
    user = f"pol-{uid}"
    idle, active = f"p1-{uid}", f"p2-{uid}"
    conversation(server, http, user, [idle, active], uid)
    age(server, [idle], days=40)  # past 30 days, within the default 90
    with server.superuser() as conn:
        facts = conn.execute(
            "SELECT uuid FROM facts WHERE user_id = %s ORDER BY created_at", (user,)
        ).fetchall()
        assert len(facts) >= 2
        old_fact, new_fact = facts[0][0], facts[1][0]
        conn.execute(
            "UPDATE facts SET invalid_at = now() - interval '20 days' WHERE uuid = %s", (old_fact,)
        )
        conn.execute(
            "UPDATE facts SET invalid_at = now() - interval '5 days' WHERE uuid = %s", (new_fact,)
        )

    set_ = cli_json(server, "retention", "set", "--days", "30", "--action", "delete",
                    "--fact-cleanup-days", "10")  # fmt: skip
    assert set_["source"] == "tenant" and set_["updated_by"].startswith("cli:")
    assert cli_json(server, "retention", "show")["action"] == "delete"
    report = cli_json(server, "retention", "run")["default"]
    assert report["deleted"] >= 1 and report["facts_deleted"] >= 1

    assert http.get(f"/api/v2/sessions/{idle}").status_code == 404
    assert http.get(f"/api/v2/sessions/{active}").status_code == 200
    with server.superuser() as conn:
        left = {r[0] for r in conn.execute("SELECT uuid FROM facts WHERE user_id = %s", (user,))}
        archived = conn.execute("SELECT count(*) FROM archives WHERE session_id = %s", (idle,))
        assert archived.fetchone() == (0,)  # deleted, not archived
    assert old_fact not in left and new_fact in left

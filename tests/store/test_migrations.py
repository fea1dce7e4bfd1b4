"""Migrations from empty, the two roles, and Row-Level Security, read from the catalog."""

from __future__ import annotations

import secrets
import shutil
import subprocess

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from engram.config import load_settings
from engram.store import migrate
from tests.fix_app import App
from tests.fix_server import ENGRAM, short_tmpdir, start_server, stop_server


def test_every_migration_is_recorded_and_none_pending(app: App) -> None:
    with app.superuser() as conn:
        applied = [
            r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")
        ]
    assert applied and applied[0] == "0001_foundation.sql"
    assert migrate.pending_migrations(app.pg.dsn("engram_app")) == []


def test_vector_settings_recorded_at_first_migration(app: App) -> None:
    with app.superuser() as conn:
        meta = migrate.read_meta(conn)
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_embedding_idx'"
        ).fetchone()
        reloptions = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'messages'"
        ).fetchone()
    assert meta is not None and meta.dimensions == 384 and meta.index == "hnsw"
    assert meta.params == {"m": 16, "ef_construction": 64}
    assert indexdef and "hnsw" in str(indexdef[0]) and "m='16'" in str(indexdef[0])
    assert reloptions and "autovacuum_vacuum_scale_factor=0.1" in reloptions[0]
    assert "autovacuum_analyze_scale_factor=0.05" in reloptions[0]


def test_migrating_again_is_a_no_op(app: App) -> None:
    settings = load_settings(data_dir=app.data_dir)
    owner = app.pg.dsn("engram_owner")
    assert migrate.migrate(owner, settings, "local/all-MiniLM-L6-v2", 384) == []


def test_app_role_owns_nothing_and_cannot_bypass_rls(app: App) -> None:
    with app.superuser() as conn:
        role = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
            " WHERE rolname = 'engram_app'"
        ).fetchone()
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE r.rolname = 'engram_app'"
        ).fetchone()
    assert role == (False, False, False, False)
    assert owned == (0,)


def test_every_tenant_table_forces_rls_with_a_policy(app: App) -> None:
    with app.superuser() as conn:
        rows = conn.execute(
            """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                      (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
               FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE a.attname = 'tenant_id' AND c.relkind = 'r' AND n.nspname = 'public'"""
        ).fetchall()
    assert {r[0] for r in rows} >= {"users", "sessions", "messages"}
    for name, enabled, forced, policies in rows:
        assert enabled and forced and policies >= 1, name


def test_without_tenant_context_the_app_role_sees_nothing(app: App, uid: str) -> None:
    with app.client() as http:
        assert http.post("/api/v2/users", json={"user_id": f"u-{uid}"}).status_code == 201
    with psycopg.connect(app.pg.dsn("engram_app"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', 'someone-else', false)")
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', 'default', false)")
        found = conn.execute("SELECT count(*) FROM users WHERE user_id = %s", (f"u-{uid}",))
        assert found.fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO users (tenant_id, user_id) VALUES ('other', 'x')")


@pytest.mark.integration
@pytest.mark.slow
def test_0018_keeps_the_ids_and_counts_on_per_tenant_past_the_old_sequence() -> None:
    """Upgrading a database whose users and sessions were numbered by one sequence for
    all tenants (as before 0018): every row keeps its id, and new ones count per tenant
    from past the last id the sequence gave, so none repeats an old one."""
    root = short_tmpdir("eg-m18-")
    key = secrets.token_urlsafe(24)
    srv = start_server(root / "d", api_key=key, extra=["--no-worker"])
    try:
        with srv.superuser() as conn:  # back to the schema before 0018
            for table in ("users", "sessions"):
                conn.execute(f"DROP TRIGGER {table}_tenant_id ON {table}")
                conn.execute(
                    f"ALTER TABLE {table} ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY"
                    " (START WITH 100)"
                )
            conn.execute("DROP FUNCTION engram_tenant_id()")
            conn.execute("DROP TABLE tenant_counters")
            conn.execute("DELETE FROM engram_meta WHERE key = 'id_floor'")
            conn.execute("DELETE FROM schema_migrations WHERE version = 18")
        with srv.client() as http:
            assert http.post("/v1/admin/tenants", json={"id": "t2"}).status_code == 201
            body = {"name": "k", "role": "writer", "tenant": "t2"}
            other = http.post("/v1/admin/apikeys", json=body).json()["key"]
            before = {}
            for tenant, auth in (("default", f"Api-Key {key}"), ("t2", f"Api-Key {other}")):
                http.headers["Authorization"] = auth
                for n in range(3):
                    name = f"{tenant}-{n}"
                    r = http.post("/api/v2/users", json={"user_id": name})
                    s = http.post("/api/v2/sessions", json={"session_id": name, "user_id": name})
                    before[tenant, n] = (r.json()["id"], s.json()["id"])
        assert sorted(u for u, _ in before.values()) == list(range(100, 106))  # one sequence
        stop_server(srv)
        srv = start_server(root / "d", api_key=key, extra=["--no-worker"])
        with srv.client() as http:
            for tenant, auth in (("default", f"Api-Key {key}"), ("t2", f"Api-Key {other}")):
                http.headers["Authorization"] = auth
                for n in range(3):
                    r = http.get(f"/api/v2/users/{tenant}-{n}").json()["id"]
                    s = http.get(f"/api/v2/sessions/{tenant}-{n}").json()["id"]
                    assert (r, s) == before[tenant, n]
                name = f"{tenant}-new"
                r = http.post("/api/v2/users", json={"user_id": name})
                s = http.post("/api/v2/sessions", json={"session_id": name, "user_id": name})
                assert (r.json()["id"], s.json()["id"]) == (106, 106), tenant
            order = [u["user_id"] for u in http.get("/api/v2/users-ordered").json()["users"]]
            assert order == ["t2-0", "t2-1", "t2-2", "t2-new"]  # creation order still
    finally:
        stop_server(srv)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.slow
def test_0015_leaves_declared_message_metadata_of_every_tenant_to_the_next_run() -> None:
    """Upgrading a database whose declared messages kept their metadata values in clear
    (as before 0015): those rows, in every tenant, wait for the next re-encryption run,
    which seals them; rows with nothing to protect are classified at once."""
    root = short_tmpdir("eg-m15-")
    key = secrets.token_urlsafe(24)
    srv = start_server(root / "d", api_key=key, extra=["--no-worker"])
    try:
        sids = {}
        with srv.client() as http:
            assert http.post("/v1/admin/tenants", json={"id": "t2"}).status_code == 201
            body = {"name": "k", "role": "writer", "tenant": "t2", "read_protected": True}
            other = http.post("/v1/admin/apikeys", json=body).json()["key"]
            for tenant, auth in (("default", f"Api-Key {key}"), ("t2", f"Api-Key {other}")):
                http.headers["Authorization"] = auth
                sids[tenant] = _messages_of_every_kind(http)
        with srv.superuser() as conn:
            # As 0013 stored a declared message: its values classified by the detectors
            # alone, so in clear here.
            conn.execute(
                "UPDATE messages SET metadata = %s, metadata_enc = NULL"
                " WHERE metadata ->> 'diagnosis' = '[PHI]'", (Jsonb(DECLARED),)
            )  # fmt: skip
            conn.execute("UPDATE messages SET metadata = jsonb_build_object('visit', 'x'),"
                         " metadata_enc = NULL WHERE metadata ->> 'visit' = '[PHI]'")  # fmt: skip
            conn.execute("ALTER TABLE messages DROP COLUMN metadata_sensitivity")
            conn.execute("DELETE FROM schema_migrations WHERE version = 15")
        stop_server(srv)
        srv = start_server(root / "d", api_key=key, extra=["--no-worker"])
        with srv.superuser() as conn:
            marks = dict(
                conn.execute(
                    "SELECT tenant_id || ' ' || role, metadata_sensitivity FROM messages"
                ).fetchall()
            )
            forced = conn.execute(
                "SELECT bool_and(relforcerowsecurity) FROM pg_class"
                " WHERE relname IN ('messages', 'sessions')"
            ).fetchone()
        expected = {"declared": -1, "in a declared session": -1, "sealed": -1, "plain": 0,
                    "declares only": 0}  # fmt: skip
        for tenant in sids:
            for role, mark in expected.items():
                assert marks[f"{tenant} {role}"] == mark, (tenant, role)
        assert forced == (True,)
        with srv.client() as http:
            r = http.get(f"/api/v2/sessions/{sids['default'][0]}/messages").json()
            assert r["messages"][0]["metadata"] == DECLARED  # readable all along
        app = srv.pg.dsn("engram_app", "engram")
        done = subprocess.run(
            [ENGRAM, "keys", "reencrypt", "--now", "--data-dir", str(srv.data_dir),
             "--database-url", app], capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        with srv.superuser() as conn:
            stored = conn.execute(
                """SELECT role, metadata, metadata_sensitivity, metadata_enc IS NOT NULL
                   FROM messages WHERE tenant_id = 'default' AND metadata_sensitivity <> 0
                   ORDER BY role"""
            ).fetchall()
        assert stored == [
            ("declared", {**DECLARED, "diagnosis": "[PHI]"}, 2, True),
            ("in a declared session", {"visit": "[PHI]"}, 2, True),
            ("sealed", {"contact": "[EMAIL]"}, 1, True),
        ]
    finally:
        stop_server(srv)
        shutil.rmtree(root, ignore_errors=True)


DECLARED = {"sensitivity": "phi", "diagnosis": "type 2 diabetes"}


def _messages_of_every_kind(http: httpx.Client) -> list[str]:
    """A user, a plain and a declared session, messages of each kind (named by their role);
    the session ids."""
    assert http.post("/api/v2/users", json={"user_id": "u"}).status_code == 201
    for sid, meta in (("s", {}), ("sd", {"sensitivity": "phi"})):
        body = {"session_id": sid, "user_id": "u", "metadata": meta}
        assert http.post("/api/v2/sessions", json=body).status_code == 201
    plain = [("declared", DECLARED), ("plain", {"topic": "piano"}),
             ("sealed", {"contact": "ada@example.org"}),
             ("declares only", {"sensitivity": "phi"})]  # fmt: skip
    for sid, messages in (("s", plain), ("sd", [("in a declared session", {"visit": "x"})])):
        body = {"messages": [{"role_type": "user", "role": r, "content": "hello", "metadata": m}
                             for r, m in messages]}  # fmt: skip
        assert http.post(f"/api/v2/sessions/{sid}/memory", json=body).status_code == 200
    return ["s", "sd"]

"""Migrations from empty, the two roles, and Row-Level Security, read from the catalog."""

from __future__ import annotations

import psycopg
import pytest

from engram.config import load_settings
from engram.store import migrate
from tests.fix_server import Server

pytestmark = pytest.mark.integration


def test_every_migration_is_recorded_and_none_pending(server: Server) -> None:
    with server.superuser() as conn:
        applied = [
            r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")
        ]
    assert applied and applied[0] == "0001_foundation.sql"
    assert migrate.pending_migrations(server.pg.dsn("engram_app")) == []


def test_vector_settings_recorded_at_first_migration(server: Server) -> None:
    with server.superuser() as conn:
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


def test_migrating_again_is_a_no_op(server: Server) -> None:
    settings = load_settings(data_dir=server.data_dir)
    owner = server.pg.dsn("engram_owner")
    assert migrate.migrate(owner, settings, "local/all-MiniLM-L6-v2", 384) == []


def test_app_role_owns_nothing_and_cannot_bypass_rls(server: Server) -> None:
    with server.superuser() as conn:
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


def test_every_tenant_table_forces_rls_with_a_policy(server: Server) -> None:
    with server.superuser() as conn:
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


def test_without_tenant_context_the_app_role_sees_nothing(server: Server, uid: str) -> None:
    with server.client() as http:
        assert http.post("/api/v2/users", json={"user_id": f"u-{uid}"}).status_code == 201
    with psycopg.connect(server.pg.dsn("engram_app"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', 'someone-else', false)")
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', 'default', false)")
        found = conn.execute("SELECT count(*) FROM users WHERE user_id = %s", (f"u-{uid}",))
        assert found.fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO users (tenant_id, user_id) VALUES ('other', 'x')")

"""`engram doctor` on the real embedded PostgreSQL: a healthy install passes, and each
way of breaking it fails with the check that names the problem and exit status 1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engram.crypto.providers import LocalKeyProvider
from engram.store.embedded import EmbeddedPostgres
from tests.fix_server import ENGRAM, free_port, short_tmpdir

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    """A migrated embedded database, kept running so that every doctor run reuses it."""
    root = short_tmpdir("egdoc-")
    d = root / "d"
    pg = EmbeddedPostgres(d)
    pg.start()
    try:
        done = subprocess.run([ENGRAM, "migrate", "--data-dir", str(d)], capture_output=True,
                              text=True, timeout=180, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        LocalKeyProvider(d / "keys" / "kek.json").current_kek()  # the key file, as serve makes
        yield d
    finally:
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def su(data_dir: Path) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with EmbeddedPostgres(data_dir).superuser_conn() as conn:
        yield conn


def doctor(data_dir: Path, *args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit status and {check: (status, whole row text)} from the printed table."""
    r = subprocess.run([ENGRAM, "doctor", "--data-dir", str(data_dir), *args],
                       capture_output=True, text=True, timeout=120, check=False,
                       env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    rows: dict[str, tuple[str, str]] = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip()[1:-1].split("│")]
        if len(cells) == 4 and cells[1] in ("pass", "warn", "fail"):
            rows[cells[0]] = (cells[1], " ".join(cells[2:]))
    assert rows, r.stdout + r.stderr
    return r.returncode, rows


def failed(rows: dict[str, tuple[str, str]]) -> set[str]:
    return {name for name, (status, _) in rows.items() if status == "fail"}


def test_a_healthy_install_passes(data_dir: Path) -> None:
    code, rows = doctor(data_dir)
    assert code == 0, rows
    assert set(rows) >= {"database reachable", "server version", "pgvector", "migrations",
                         "embedder", "app role", "row-level security", "vector indexes",
                         "autovacuum", "max_connections", "job queue", "connection pooler",
                         "key provider", "TLS to the database"}  # fmt: skip
    assert all(status == "pass" for status, _ in rows.values()), rows
    assert "18." in rows["server version"][1]
    assert re.search(r"on all (\d+) tenant tables", rows["row-level security"][1])
    assert "messages_embedding_idx (hnsw)" in rows["vector indexes"][1]
    assert "round trip" in rows["key provider"][1]


def test_an_app_role_that_bypasses_rls_fails(
    data_dir: Path, su: psycopg.Connection[tuple[object, ...]]
) -> None:
    su.execute("ALTER ROLE engram_app BYPASSRLS")
    try:
        code, rows = doctor(data_dir)
    finally:
        su.execute("ALTER ROLE engram_app NOBYPASSRLS")
    assert code == 1
    assert failed(rows) == {"app role"}
    assert "BYPASSRLS" in rows["app role"][1] and "ALTER ROLE engram_app" in rows["app role"][1]


def test_rls_not_forced_on_a_table_fails(
    data_dir: Path, su: psycopg.Connection[tuple[object, ...]]
) -> None:
    su.execute("ALTER TABLE facts NO FORCE ROW LEVEL SECURITY")
    try:
        code, rows = doctor(data_dir)
    finally:
        su.execute("ALTER TABLE facts FORCE ROW LEVEL SECURITY")
    assert code == 1
    assert failed(rows) == {"row-level security"}
    assert "facts (not forced)" in rows["row-level security"][1]


def test_a_dropped_vector_index_fails(
    data_dir: Path, su: psycopg.Connection[tuple[object, ...]]
) -> None:
    su.execute("DROP INDEX messages_embedding_idx")
    try:
        code, rows = doctor(data_dir)
    finally:
        su.execute("CREATE INDEX messages_embedding_idx ON messages USING hnsw "
                   "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")  # fmt: skip
    assert code == 1
    assert failed(rows) == {"vector indexes"}
    assert "messages.embedding has no vector index" in rows["vector indexes"][1]


def test_a_pending_migration_fails(
    data_dir: Path, su: psycopg.Connection[tuple[object, ...]]
) -> None:
    row = su.execute("DELETE FROM schema_migrations WHERE version = 4 RETURNING *").fetchone()
    assert row is not None
    try:
        code, rows = doctor(data_dir)
    finally:
        su.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s, %s)", row)
    assert code == 1
    assert failed(rows) == {"migrations"}
    assert "0004_retrieval.sql" in rows["migrations"][1]
    assert "engram migrate" in rows["migrations"][1]


def test_autovacuum_off_on_a_table_fails(
    data_dir: Path, su: psycopg.Connection[tuple[object, ...]]
) -> None:
    su.execute("ALTER TABLE messages SET (autovacuum_enabled = false)")
    try:
        code, rows = doctor(data_dir)
    finally:
        su.execute("ALTER TABLE messages RESET (autovacuum_enabled)")
    assert code == 1
    assert failed(rows) == {"autovacuum"}
    assert "messages" in rows["autovacuum"][1]


def test_pools_larger_than_max_connections_fail(data_dir: Path) -> None:
    code, rows = doctor(data_dir, "--api-replicas", "20")
    assert code == 1
    assert failed(rows) == {"max_connections"}
    assert "20 API x 15" in rows["max_connections"][1]


def test_an_unreachable_database_fails_at_once() -> None:
    dsn = f"postgresql://engram_app@127.0.0.1:{free_port()}/engram"
    r = subprocess.run([ENGRAM, "doctor", "--database-url", dsn], capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 1
    assert "database reachable" in r.stdout and "fail" in r.stdout

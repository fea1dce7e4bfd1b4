"""`--database-url`: an external PostgreSQL (here: a separately started server) by DSN."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engram.store import migrate
from engram.store.embedded import EmbeddedPostgres
from tests.fix_server import ENGRAM, free_port, short_tmpdir, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _tcp(pg: EmbeddedPostgres, role: str) -> str:
    return f"postgresql://{role}:pw-{role}@127.0.0.1:{pg.port}/engram"


@pytest.fixture
def external() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL the Engram server did not start, prepared as docs/deployment.md says."""
    root = short_tmpdir("egx-")
    pg = EmbeddedPostgres(root / "pg", port=free_port(), tcp=True)
    pg.start()
    migrate.bootstrap_embedded(pg.superuser_dsn, "engram_owner", "engram_app", "engram")
    with pg.superuser_conn("postgres") as conn:
        for role in ("engram_owner", "engram_app"):
            conn.execute(f"ALTER ROLE {role} PASSWORD 'pw-{role}'")
    yield pg
    pg.stop(force=True)
    shutil.rmtree(root, ignore_errors=True)


def test_serve_requires_migrate_first_then_runs_on_the_external_server(
    external: EmbeddedPostgres,
) -> None:
    app_dsn = _tcp(external, "engram_app")
    serve_dir = short_tmpdir("egs-")
    try:
        refused = subprocess.run(
            [ENGRAM, "serve", "--database-url", app_dsn, "--data-dir", str(serve_dir),
             "--port", str(free_port())],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2
        assert "engram migrate" in " ".join(refused.stderr.split())

        done = subprocess.run(
            [ENGRAM, "migrate", "--database-url", _tcp(external, "engram_owner")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "0001_foundation.sql" in done.stdout + done.stderr

        srv = start_server(
            serve_dir / "d", api_key=secrets.token_urlsafe(16), extra=["--database-url", app_dsn]
        )
        try:
            with srv.client() as http:
                assert http.post("/api/v2/users", json={"user_id": "ext"}).status_code == 201
        finally:
            assert stop_server(srv) == 0
        assert not (serve_dir / "d" / "pg").exists()  # no embedded server was started
        with external.superuser_conn() as conn:
            assert conn.execute("SELECT count(*) FROM users WHERE user_id = 'ext'").fetchone() == (
                1,
            )
    finally:
        shutil.rmtree(serve_dir, ignore_errors=True)


def test_sslmode_is_honoured(external: EmbeddedPostgres) -> None:
    # The embedded server is built without TLS, so sslmode=require must be refused
    # rather than silently falling back to plaintext.
    dsn = _tcp(external, "engram_app") + "?sslmode=require"
    result = subprocess.run(
        [ENGRAM, "serve", "--database-url", dsn, "--data-dir", str(Path("/tmp/egssl")),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    shutil.rmtree("/tmp/egssl", ignore_errors=True)
    assert result.returncode == 2
    assert "SSL" in result.stderr

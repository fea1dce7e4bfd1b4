"""A real PgBouncer (Debian's) in transaction pooling mode in front of a migrated
embedded PostgreSQL, one per test module, with its admin console open to SHOW."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engram.store import migrate
from engram.store.embedded import EmbeddedPostgres
from tests.fix_server import ENGRAM, free_port, short_tmpdir

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOL_SIZE = 2


@dataclass
class Bouncer:
    pg: EmbeddedPostgres
    port: int
    log: Path

    def dsn(self, role: str = "engram_app") -> str:
        return f"postgresql://{role}:pw-{role}@127.0.0.1:{self.port}/engram"

    def direct(self, role: str = "engram_app") -> str:
        return f"postgresql://{role}:pw-{role}@127.0.0.1:{self.pg.port}/engram"

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on PgBouncer's admin console (STATS, POOLS, SERVERS, ...)."""
        dsn = f"postgresql://engram_owner:pw-engram_owner@127.0.0.1:{self.port}/pgbouncer"
        # The console speaks only the simple query protocol: no parameters, no prepare.
        with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture(scope="module")
def bouncer() -> Iterator[Bouncer]:
    """Embedded PostgreSQL on TCP, migrated, with PgBouncer (transaction mode) in front."""
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.skip("pgbouncer is not installed (make test installs Debian's package)")
    root = short_tmpdir("egpb-")
    pg = EmbeddedPostgres(root / "pg", port=free_port(), tcp=True)
    pg.start()
    process = None
    try:
        migrate.bootstrap_embedded(pg.superuser_dsn, "engram_owner", "engram_app", "engram")
        with pg.superuser_conn("postgres") as conn:
            for role in ("engram_owner", "engram_app"):
                conn.execute(f"ALTER ROLE {role} PASSWORD 'pw-{role}'")
        bouncer = Bouncer(pg, free_port(), root / "pgbouncer.log")
        done = subprocess.run([ENGRAM, "migrate", "--database-url", bouncer.direct("engram_owner")],
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        conf = root / "bouncer"
        conf.mkdir()
        (conf / "userlist.txt").write_text(
            '"engram_app" "pw-engram_app"\n"engram_owner" "pw-engram_owner"\n'
        )
        (conf / "pgbouncer.ini").write_text(
            f"[databases]\nengram = host=127.0.0.1 port={pg.port} dbname=engram\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {bouncer.port}\n"
            f"auth_type = scram-sha-256\nauth_file = {conf / 'userlist.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\n"
            "max_client_conn = 200\nunix_socket_dir =\nstats_users = engram_owner\n"
        )
        args = [PGBOUNCER, str(conf / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            args[1:1] = ["-u", "embedded_postgres"]
            for path in (root, conf, *conf.iterdir()):
                path.chmod(0o755 if path.is_dir() else 0o644)
        with bouncer.log.open("ab") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(bouncer.dsn(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(bouncer.log.read_text()) from None
                time.sleep(0.1)
        yield bouncer
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)

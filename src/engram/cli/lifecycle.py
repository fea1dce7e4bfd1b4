"""`engram retention | archive | erase | backup | restore`: the data lifecycle."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from engram.cli.common import (
    ConfigOpt,
    DatabaseOpt,
    DataDirOpt,
    TenantOpt,
    actor,
    app,
    console,
    fail,
    load,
    setup_logging,
    tenant_or_default,
    with_runtime,
)
from engram.errors import EngramError, ValidationError

if TYPE_CHECKING:
    from engram.lifecycle.blobs import BlobStore
    from engram.runtime import Runtime

__all__: list[str] = []

retention_app = typer.Typer(no_args_is_help=True, help="Retention policy and the retention job.")
app.add_typer(retention_app, name="retention")
archive_app = typer.Typer(no_args_is_help=True, help="Archived sessions in blob storage.")
app.add_typer(archive_app, name="archive")

out = Console()


def _store(runtime: Runtime) -> BlobStore:
    from engram.lifecycle.blobs import build_blob_store

    return build_blob_store(runtime.settings.lifecycle.blob, runtime.settings.data_dir)


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


@retention_app.command("show")
def retention_show(
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Show the tenant's retention policy (its own, or the configured defaults)."""
    from engram.lifecycle.policy import effective_policy

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        async with rt.db.tenant(tenant_or_default(rt, tenant)) as conn:
            return (await effective_policy(conn, rt.settings.lifecycle)).to_json()

    _print_json(with_runtime(config, data_dir, database_url, work))


@retention_app.command("set")
def retention_set(
    days: Annotated[int | None, typer.Option("--days", min=1, help="retention in days")] = None,
    keep_forever: Annotated[
        bool, typer.Option("--keep-forever", help="never expire sessions")
    ] = False,
    action: Annotated[str | None, typer.Option(help="archive or delete expired sessions")] = None,
    fact_cleanup_days: Annotated[
        int | None, typer.Option(min=1, help="delete facts invalid for longer than this")
    ] = None,
    keep_facts: Annotated[bool, typer.Option("--keep-facts", help="never delete facts")] = False,
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Change the tenant's retention policy (options not given keep their value)."""
    from engram.lifecycle.policy import set_policy

    changes: dict[str, Any] = {}
    if days is not None or keep_forever:
        changes["retention_days"] = None if keep_forever else days
    if action is not None:
        changes["action"] = action
    if fact_cleanup_days is not None or keep_facts:
        changes["fact_cleanup_days"] = None if keep_facts else fact_cleanup_days
    if not changes:
        fail(
            ValidationError(
                "nothing to change",
                hint="give --days/--keep-forever, --action or --fact-cleanup-days/--keep-facts",
            )
        )

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        t = tenant_or_default(rt, tenant)
        async with rt.db.tenant(t) as conn:
            policy = await set_policy(conn, t, rt.settings.lifecycle, changes, actor())
        return policy.to_json()

    _print_json(with_runtime(config, data_dir, database_url, work))


@retention_app.command("run")
def retention_run(
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the retention job once now (what the worker runs on its schedule)."""
    from engram.lifecycle.retention import run_retention

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        return await run_retention(rt.db, rt.settings, only=[tenant] if tenant else None)

    _print_json(with_runtime(config, data_dir, database_url, work))


@archive_app.command("list")
def archive_list(
    session: Annotated[str | None, typer.Option(help="only this session's archives")] = None,
    user: Annotated[str | None, typer.Option(help="only this user's archives")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List archived sessions, newest first."""
    from engram.store import archives

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        async with rt.db.tenant(tenant_or_default(rt, tenant)) as conn:
            return await archives.list_records(conn, session_id=session, user_id=user)

    rows = with_runtime(config, data_dir, database_url, work)
    if as_json:
        _print_json(rows)
        return
    table = Table("session", "user", "state", "messages", "bytes", "archived", "archive id")
    for column in table.columns:
        column.overflow = "fold"
    for r in rows:
        table.add_row(
            r["session_id"],
            r["user_id"] or "",
            r["state"],
            str(r["counts"].get("messages", "")),
            str(r["bytes"]),
            str(r["archived_at"] or ""),
            str(r["archive_id"]),
        )
    out.print(table)


@archive_app.command("restore")
def archive_restore(
    session: Annotated[str, typer.Argument(help="the session id to bring back")],
    archive_id: Annotated[
        str | None, typer.Option(help="a specific archive (default: the newest)")
    ] = None,
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Restore an archived session into the database, exactly as it was."""
    from engram.lifecycle.archive import restore_session

    try:
        wanted = uuidlib.UUID(archive_id) if archive_id else None
    except ValueError:
        fail(
            ValidationError(
                f"--archive-id {archive_id!r} is not a UUID",
                hint="copy it from `engram archive list`",
            )
        )

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        return await restore_session(
            rt.db, _store(rt), tenant_or_default(rt, tenant), session, wanted
        )

    _print_json(with_runtime(config, data_dir, database_url, work))


@app.command("erase")
def erase(
    user: Annotated[str, typer.Option("--user", help="the user id to erase")],
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Erase a user (GDPR): sessions, messages, graph, archives, jobs and data keys.
    Safe to run again: an interrupted erasure is completed."""
    from engram.lifecycle.erasure import erase_user

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        return await erase_user(
            rt.db,
            lambda: _store(rt),
            tenant_or_default(rt, tenant),
            user,
            actor(),
            keyrings=rt.keyrings,
        )

    _print_json(with_runtime(config, data_dir, database_url, work))


def _superuser_dsn(
    config: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    action: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``action(dsn)`` against a DSN that can read every row (the given one, or the
    embedded server's superuser, started for the call), then count the rows there."""
    from engram.lifecycle.backup import row_counts

    def work(dsn: str) -> dict[str, Any]:
        result = action(dsn)
        result["rows"] = row_counts(dsn)
        return result

    from engram.store.embedded import EmbeddedPostgres
    from engram.store.migrate import bootstrap_embedded

    if database_url is not None:
        try:
            return work(database_url)
        except EngramError as exc:
            fail(exc)
    settings = load(config, data_dir=data_dir)
    setup_logging(settings.log_level)
    pg = EmbeddedPostgres(Path(settings.data_dir))
    try:
        pg.start()
        bootstrap_embedded(
            pg.superuser_dsn, settings.owner_role, settings.app_role, settings.database_name
        )
        return work(pg.dsn("postgres", settings.database_name))
    except EngramError as exc:
        fail(exc)
    finally:
        pg.stop()


SuperDbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="DSN of a superuser or BYPASSRLS role; default: the embedded server"
    ),
]


@app.command("backup")
def backup(
    out_file: Annotated[Path, typer.Option("--out", help="the dump file to write")],
    data_dir: DataDirOpt = None,
    database_url: SuperDbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Back up the whole database (pg_dump custom format)."""
    from engram.lifecycle.backup import backup_database

    done = _superuser_dsn(
        config, data_dir, database_url, lambda dsn: backup_database(dsn, out_file)
    )
    _print_json(done)
    console.print(
        "[yellow]note:[/] the backup holds wrapped data keys only; keep the key "
        "provider's keys (local provider: <data dir>/keys) backed up separately"
    )


@app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="a file written by `engram backup`")],
    data_dir: DataDirOpt = None,
    database_url: SuperDbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Restore a backup into an empty database (a new --data-dir, or an empty database)."""
    from engram.lifecycle.backup import restore_database

    _print_json(
        _superuser_dsn(config, data_dir, database_url, lambda dsn: restore_database(dsn, file))
    )

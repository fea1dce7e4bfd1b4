"""`engram audit verify|export|checkpoint`."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from engram.cli.common import ConfigOpt, DatabaseOpt, DataDirOpt, app, console, with_runtime

if TYPE_CHECKING:
    from engram.runtime import Runtime

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
app.add_typer(audit_app, name="audit")

TenantOpt = Annotated[str | None, typer.Option("--tenant", help="default: every tenant")]


async def _tenants(rt: Runtime, tenant: str | None) -> list[str]:
    from engram.store import tenants

    assert rt.db is not None

    if tenant is not None:
        return [tenant]
    async with rt.db.tenant("") as conn:
        return [r["id"] for r in await tenants.list_all(conn)]


@audit_app.command("verify")
def verify(
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check every record's hash and link, and the latest signed checkpoint; name each
    break. Exit 1 when anything does not verify."""
    from engram.audit.checkpoints import from_settings
    from engram.audit.verify import Report, verify_tenant

    async def work(rt: Runtime) -> list[Report]:
        assert rt.db is not None
        store, signer = from_settings(rt.settings)
        reports = []
        for t in await _tenants(rt, tenant):
            async with rt.db.tenant(t) as conn:
                reports.append(await verify_tenant(conn, t, store, signer.public_key))
        return reports

    reports: list[Report] = with_runtime(config, data_dir, database_url, work)
    bad = 0
    for r in reports:
        cp = f", checkpoint at {r.checkpoint.length}" if r.checkpoint else ", no checkpoint"
        if r.ok:
            console.print(f"[green]ok[/] {r.tenant}: {r.length} records{cp}")
            continue
        bad += 1
        console.print(f"[bold red]TAMPERED[/] {r.tenant}: {r.length} records{cp}")
        for p in r.problems:
            console.print(f"  record {p.seq}: {p.kind}: {p.message}")
    if bad:
        raise typer.Exit(code=1)


@audit_app.command("export")
def export(
    tenant: TenantOpt = None,
    since: Annotated[
        datetime | None, typer.Option(help="only records at or after this time (ISO 8601)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write; default: stdout")
    ] = None,
    resolve: Annotated[
        bool,
        typer.Option(
            "--resolve",
            help="add to each record a 'subjects' object: its user and session pseudonyms "
            "mapped to their ids (for those not erased)",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the records as JSON lines (one object per record, chain fields included).
    Records name users and sessions by pseudonym; --resolve adds who they are."""
    from engram.audit.subjects import attach_subjects
    from engram.store import audit as store

    out = output.open("wb") if output else sys.stdout.buffer

    async def flush(conn: Any, rows: list[dict[str, Any]]) -> None:
        if resolve:
            await attach_subjects(conn, rows)
        for r in rows:
            out.write(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE))
        rows.clear()

    async def work(rt: Runtime) -> int:
        assert rt.db is not None
        n = 0
        for t in await _tenants(rt, tenant):
            async with rt.db.tenant(t) as conn:
                rows: list[dict[str, Any]] = []
                async for row in store.iterate(conn, t, since=since):
                    rows.append(row)
                    n += 1
                    if len(rows) >= 1000:
                        await flush(conn, rows)
                await flush(conn, rows)
        return n

    try:
        n = with_runtime(config, data_dir, database_url, work)
    finally:
        if output:
            out.close()
        else:
            out.flush()
    console.print(f"exported {n} records")


@audit_app.command("checkpoint")
def checkpoint(
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a signed checkpoint of each chain now (the server also writes them)."""
    from engram.audit.checkpoints import from_settings, write
    from engram.store import audit as store

    async def work(rt: Runtime) -> list[tuple[str, int]]:
        assert rt.db is not None
        folder, signer = from_settings(rt.settings)
        done = []
        for t in await _tenants(rt, tenant):
            async with rt.db.tenant(t) as conn:
                length, head = await store.head(conn, t)
            if length:
                write(folder, signer, t, length, head)
                done.append((t, length))
        return done

    for t, length in with_runtime(config, data_dir, database_url, work):
        console.print(f"checkpoint {t}: {length} records")

"""`engram doctor`: check a deployment and say what to fix."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engram.cli.common import ConfigOpt, DatabaseOpt, DataDirOpt, app, fail, load
from engram.errors import EngramError

STYLE = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]"}


@app.command("doctor")
def doctor_cmd(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    api_replicas: Annotated[
        int, typer.Option(min=0, help="API pods sharing the database (Helm api.replicas)")
    ] = 3,
    worker_replicas: Annotated[
        int, typer.Option(min=0, help="worker pods (Helm worker.replicas)")
    ] = 2,
    config: ConfigOpt = None,
) -> None:
    """Check the database, roles, RLS, indexes, pools, jobs and keys; exit 1 on a failure."""
    from engram.embed import build_embedder
    from engram.ops.doctor import Topology, run_checks
    from engram.runtime import Runtime

    settings = load(config, data_dir=data_dir, database_url=database_url)
    runtime = Runtime(settings)
    try:
        runtime.start_database()
        embedder = build_embedder(settings.embedder)
        try:
            checks = run_checks(
                settings,
                runtime.app_dsn,
                embedder_id=embedder.id,
                dimensions=embedder.dimensions,
                topology=Topology(api_replicas=api_replicas, worker_replicas=worker_replicas),
            )
        finally:
            embedder.close()
    except EngramError as exc:
        fail(exc)
    finally:
        runtime.shutdown()
    out = Console(width=max(Console().width, 140))
    table = Table("check", "status", "detail", "what to do", title="engram doctor")
    for c in checks:
        table.add_row(c.name, STYLE[c.status], c.detail, c.fix)
    out.print(table)
    failed = [c.name for c in checks if c.status == "fail"]
    warned = [c.name for c in checks if c.status == "warn"]
    out.print(
        f"{len(checks)} checks: {len(checks) - len(failed) - len(warned)} passed, "
        f"{len(warned)} warnings, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    if failed:
        raise typer.Exit(code=1)

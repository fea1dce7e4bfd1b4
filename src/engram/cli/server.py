"""`engram serve`, `migrate`, `worker`, `jobs` and `model prepare`."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from engram.cli.common import (
    ConfigOpt,
    DatabaseOpt,
    DataDirOpt,
    app,
    console,
    fail,
    load,
    setup_logging,
    with_runtime,
)
from engram.errors import EngramError

if TYPE_CHECKING:
    from engram.runtime import Runtime

model_app = typer.Typer(no_args_is_help=True, help="The local embedding model.")
app.add_typer(model_app, name="model")
jobs_app = typer.Typer(no_args_is_help=True, help="Extraction jobs.")
app.add_typer(jobs_app, name="jobs")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="the API key clients send (or ENGRAM_API_KEY)")
    ] = None,
    config: ConfigOpt = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="do not run an extraction worker in-process")
    ] = False,
) -> None:
    """Serve the API (starting the embedded PostgreSQL unless --database-url is given)."""
    import uvicorn

    from engram.api import create_app
    from engram.api.header_timeout import with_header_timeout
    from engram.runtime import Runtime

    settings = load(
        config, host=host, port=port, data_dir=data_dir, database_url=database_url,
        api_key=api_key,
    )  # fmt: skip
    if no_worker:
        settings.worker.enabled = False
    setup_logging(settings.log_level)
    runtime = Runtime(settings)

    def _stop_during_start(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    # Until uvicorn takes over, a signal unwinds through `finally` (stopping PostgreSQL).
    signal.signal(signal.SIGTERM, _stop_during_start)
    signal.signal(signal.SIGINT, _stop_during_start)
    try:
        try:
            from engram.auth.transport import check_transport

            check_transport(settings)
            runtime.prepare()
        except EngramError as exc:
            fail(exc)
        where = (
            "embedded PostgreSQL in " + str(settings.data_dir)
            if settings.embedded
            else "external PostgreSQL"
        )
        tls = settings.tls
        scheme = "https" if tls.certfile else "http"
        console.print(f"[green]Engram[/] on {scheme}://{settings.host}:{settings.port} ({where})")
        if settings.metrics.port:
            console.print(
                f"Every metric at {scheme}://{settings.host}:{settings.metrics.port}/metrics"
            )
        if settings.api_key is None:
            key_file = Path(settings.data_dir).expanduser() / "api_key"
            console.print(f"API key: in {key_file} (send 'Authorization: Api-Key <key>')")
        # uvicorn restores these after its graceful shutdown and re-raises the signal it
        # caught; ignoring it then lets `finally` stop the embedded server and exit 0.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        uvicorn.run(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=10,
            http=with_header_timeout(settings.header_timeout_s),
            ssl_certfile=str(tls.certfile) if tls.certfile else None,
            ssl_keyfile=str(tls.keyfile) if tls.keyfile else None,
        )
    finally:
        runtime.shutdown()


@app.command("migrate")
def migrate_cmd(
    data_dir: DataDirOpt = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="DSN of the OWNER role (or ENGRAM_MIGRATE_DATABASE_URL); default: embedded",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Apply pending migrations as the owner role, then exit."""
    from engram.embed import build_embedder
    from engram.runtime import Runtime
    from engram.store import migrate

    settings = load(config, data_dir=data_dir)
    setup_logging(settings.log_level)
    owner_dsn = database_url or (
        settings.migrate_database_url.get_secret_value() if settings.migrate_database_url else None
    )
    runtime = Runtime(settings)
    try:
        if owner_dsn is None:
            if not settings.embedded:
                fail(
                    EngramError(
                        "no owner DSN to migrate an external database with",
                        hint="pass --database-url OWNER_DSN or set ENGRAM_MIGRATE_DATABASE_URL",
                    )
                )
            runtime.start_database()
            owner_dsn = runtime.owner_dsn
        assert owner_dsn is not None
        embedder = build_embedder(settings.embedder)
        try:
            applied = migrate.migrate(owner_dsn, settings, embedder.id, embedder.dimensions)
        finally:
            embedder.close()
        console.print(
            f"applied {len(applied)} migration(s): {', '.join(applied)}"
            if applied
            else "database is up to date"
        )
    except EngramError as exc:
        fail(exc)
    finally:
        runtime.shutdown()


@model_app.command("prepare")
def model_prepare(
    model_dir: Annotated[Path | None, typer.Option(help="where to keep the prepared model")] = None,
) -> None:
    """Convert the packaged all-MiniLM-L6-v2 to the fast ONNX form (once; offline)."""
    from engram.embed.local import prepare_model

    setup_logging("info")
    path = prepare_model(model_dir)
    console.print(f"local embedding model ready in {path}")


@app.command()
def worker(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, help="jobs processed at once")] = 1,
    config: ConfigOpt = None,
) -> None:
    """Run an extraction worker (any number, on any machine) until SIGTERM/SIGINT."""
    import asyncio

    async def work(runtime: Runtime) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(runtime.run_worker(concurrency))
        console.print(f"[green]Engram worker[/] running ({concurrency} at a time)")
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with_runtime(config, data_dir, database_url, work)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        str | None, typer.Option(help="todo, doing, succeeded, failed, cancelled, aborted")
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List extraction jobs with their state and, for failures, the reason."""
    from rich.table import Table

    from engram.jobs.admin import JobRow, list_jobs

    async def work(rt: Runtime) -> list[JobRow]:
        assert rt.queue is not None and rt.db is not None
        return await list_jobs(rt.queue, rt.db, status)

    rows = with_runtime(config, data_dir, database_url, work)
    table = Table("id", "status", "tenant", "episode", "attempts", "reason")
    for r in rows:
        table.add_row(str(r.id), r.status, r.tenant, r.episode, str(r.attempts), r.error or "")
    Console().print(table)


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[int, typer.Argument(help="the id `engram jobs list` shows")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run a failed job again now."""
    from engram.jobs.admin import retry_job

    async def work(rt: Runtime) -> None:
        assert rt.queue is not None and rt.db is not None
        await retry_job(rt.queue, rt.db, job_id)

    with_runtime(config, data_dir, database_url, work)
    console.print(f"job {job_id} queued again")

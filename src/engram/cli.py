"""The `engram` command: serve, migrate, model prepare."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from engram.config import Settings, load_settings
from engram.errors import EngramError

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Engram Memory server.")
model_app = typer.Typer(no_args_is_help=True, help="The local embedding model.")
app.add_typer(model_app, name="model")
jobs_app = typer.Typer(no_args_is_help=True, help="Extraction jobs.")
app.add_typer(jobs_app, name="jobs")
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (or ENGRAM_CONFIG)")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="where the embedded PostgreSQL keeps its data")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="external PostgreSQL DSN for the app role (or ENGRAM_DATABASE_URL); "
        "default: the embedded server",
    ),
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except EngramError as exc:
        _fail(exc)


def _fail(exc: EngramError) -> NoReturn:
    console.print(f"[bold red]error:[/] {exc.message}")
    if exc.hint:
        console.print(f"[yellow]what to do:[/] {exc.hint}")
    raise typer.Exit(code=2)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
    from engram.runtime import Runtime

    settings = _settings(
        config, host=host, port=port, data_dir=data_dir, database_url=database_url,
        api_key=api_key,
    )  # fmt: skip
    if no_worker:
        settings.worker.enabled = False
    _logging(settings.log_level)
    runtime = Runtime(settings)

    def _stop_during_start(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    # Until uvicorn takes over, a signal unwinds through `finally` (stopping PostgreSQL).
    signal.signal(signal.SIGTERM, _stop_during_start)
    signal.signal(signal.SIGINT, _stop_during_start)
    try:
        try:
            runtime.prepare()
        except EngramError as exc:
            _fail(exc)
        where = (
            "embedded PostgreSQL in " + str(settings.data_dir)
            if settings.embedded
            else "external PostgreSQL"
        )
        console.print(f"[green]Engram[/] on http://{settings.host}:{settings.port} ({where})")
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

    settings = _settings(config, data_dir=data_dir)
    _logging(settings.log_level)
    owner_dsn = database_url or (
        settings.migrate_database_url.get_secret_value() if settings.migrate_database_url else None
    )
    runtime = Runtime(settings)
    try:
        if owner_dsn is None:
            if not settings.embedded:
                _fail(
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
        _fail(exc)
    finally:
        runtime.shutdown()


@model_app.command("prepare")
def model_prepare(
    model_dir: Annotated[Path | None, typer.Option(help="where to keep the prepared model")] = None,
) -> None:
    """Convert the packaged all-MiniLM-L6-v2 to the fast ONNX form (once; offline)."""
    from engram.embed.local import prepare_model

    _logging("info")
    path = prepare_model(model_dir)
    console.print(f"local embedding model ready in {path}")


def _with_runtime(config: Path | None, data_dir: Path | None, database_url: str | None,
                  work: Any) -> Any:  # fmt: skip
    """Prepare a runtime (no migrations), open it, run ``work(runtime)``, close it."""
    import asyncio

    from engram.runtime import Runtime

    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    _logging(settings.log_level)
    runtime = Runtime(settings)
    try:
        runtime.prepare(run_migrations=False)

        async def main() -> Any:
            await runtime.open()
            try:
                return await work(runtime)
            finally:
                await runtime.close()

        return asyncio.run(main())
    except EngramError as exc:
        _fail(exc)
    finally:
        runtime.shutdown()


@app.command()
def worker(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, help="jobs processed at once")] = 1,
    config: ConfigOpt = None,
) -> None:
    """Run an extraction worker (any number, on any machine) until SIGTERM/SIGINT."""
    import asyncio

    from engram.jobs.queue import run_worker

    async def work(runtime: Any) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(
            run_worker(runtime.queue, concurrency, runtime.settings.worker.stalled_after_s)
        )
        console.print(f"[green]Engram worker[/] running ({concurrency} at a time)")
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    _with_runtime(config, data_dir, database_url, work)


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

    from engram.jobs.admin import list_jobs

    rows = _with_runtime(
        config, data_dir, database_url, lambda rt: list_jobs(rt.queue, rt.db, status)
    )
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

    _with_runtime(config, data_dir, database_url, lambda rt: retry_job(rt.queue, rt.db, job_id))
    console.print(f"job {job_id} queued again")


@app.command("size")
def size_cmd(
    sessions: Annotated[float | None, typer.Option(help="sessions stored (before growth)")] = None,
    messages_per_session: Annotated[
        float | None, typer.Option(help="messages per session on average")
    ] = None,
    avg_message_bytes: Annotated[
        float, typer.Option(help="bytes of message content on average (LoCoMo chat turns: 127)")
    ] = 125.0,
    facts: Annotated[
        float | None, typer.Option(help="facts stored (default: 1.37 per message)")
    ] = None,
    retention_days: Annotated[
        int, typer.Option(help="days messages are kept (0: forever); sets the daily write rate")
    ] = 0,
    growth_factor: Annotated[float, typer.Option(help="multiply every count by this")] = 1.0,
    embedding_dims: Annotated[int, typer.Option(help="vector dimensions")] = 384,
    vector_type: Annotated[str, typer.Option(help="vector (4 B/dim) or halfvec (2 B/dim)")] = (
        "vector"
    ),
    index: Annotated[str, typer.Option(help="hnsw or ivfflat")] = "hnsw",
    hnsw_m: Annotated[int, typer.Option(help="HNSW neighbours per node")] = 16,
    replicas: Annotated[int, typer.Option(help="API pods (Helm api.replicas)")] = 3,
    workers: Annotated[int, typer.Option(help="worker pods (Helm worker.replicas)")] = 2,
    users: Annotated[float | None, typer.Option(help="users (default: sessions / 10)")] = None,
    entities: Annotated[
        float | None, typer.Option(help="entities (default: 0.85 per fact)")
    ] = None,
    messages_per_episode: Annotated[float, typer.Option(help="messages per add-memory call")] = 2.0,
    output: Annotated[
        Path | None, typer.Option("--output", help="write the result as YAML to this file")
    ] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="compare the model with a live database")
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Size the database: bytes per table and index, RAM, Azure SKU, settings, Helm values."""
    import yaml

    from engram.errors import ValidationError
    from engram.ops import report
    from engram.ops.recommend import Deployment, plan
    from engram.ops.sizing import Workload

    out = Console(width=max(Console().width, 100))  # the tables need 100 columns
    try:
        if replicas < 1 or workers < 0 or retention_days < 0:
            raise ValidationError(
                "--replicas must be >= 1, --workers and --retention-days >= 0",
                hint="pass non-negative counts",
            )
        if measure:
            doc = _size_measure(config, data_dir, database_url, out, output is None)
        else:
            if sessions is None or messages_per_session is None:
                raise ValidationError(
                    "--sessions and --messages-per-session are required",
                    hint="e.g. engram size --sessions 100000 --messages-per-session 40, "
                    "or --measure to read a live database",
                )
            w = Workload(
                sessions=sessions, messages_per_session=messages_per_session,
                avg_message_bytes=avg_message_bytes, facts=facts, entities=entities,
                users=users, messages_per_episode=messages_per_episode,
                growth_factor=growth_factor, embedding_dims=embedding_dims,
                vector_type=vector_type, index=index, hnsw_m=hnsw_m,  # type: ignore[arg-type]
            )  # fmt: skip
            p = plan(w, Deployment(api_replicas=replicas, worker_replicas=workers,
                                   retention_days=retention_days))  # fmt: skip
            doc = report.plan_document(p, w)
            if output is None:
                report.render_plan(p, w, out)
    except EngramError as exc:
        _fail(exc)
    if output is not None:
        output.write_text(yaml.safe_dump(doc, sort_keys=False))
        console.print(f"written to {output}")


def _size_measure(config: Path | None, data_dir: Path | None, database_url: str | None,
                  out: Console, show: bool) -> dict[str, Any]:  # fmt: skip
    from engram.ops import report
    from engram.ops.measure import compare, measure
    from engram.runtime import Runtime

    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    runtime = Runtime(settings)
    try:
        runtime.start_database()
        # Embedded: the superuser sees every tenant's rows; external: the DSN given.
        dsn = (
            runtime.embedded.dsn("postgres", settings.database_name)
            if runtime.embedded is not None
            else runtime.app_dsn
        )
        m = measure(dsn, settings.default_tenant)
    finally:
        runtime.shutdown()
    _, rows = compare(m)
    if show:
        report.render_comparison(m, rows, out)
    return report.comparison_document(m, rows)

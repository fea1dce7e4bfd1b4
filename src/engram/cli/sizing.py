"""`engram size`: the sizing calculator and its comparison with a live database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engram.cli.common import ConfigOpt, DatabaseOpt, DataDirOpt, app, console, fail, load
from engram.errors import EngramError


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
        fail(exc)
    if output is not None:
        output.write_text(yaml.safe_dump(doc, sort_keys=False))
        console.print(f"written to {output}")


def _size_measure(config: Path | None, data_dir: Path | None, database_url: str | None,
                  out: Console, show: bool) -> dict[str, Any]:  # fmt: skip
    from engram.ops import report
    from engram.ops.measure import compare, measure
    from engram.runtime import Runtime

    settings = load(config, data_dir=data_dir, database_url=database_url)
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

"""What every `engram` sub-command shares: the app, options, errors and a runtime."""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from engram.config import Settings, load_settings
from engram.errors import EngramError

if TYPE_CHECKING:  # imported when a command runs: `engram --help` stays quick
    from engram.runtime import Runtime

__all__ = [
    "ConfigOpt",
    "DataDirOpt",
    "DatabaseOpt",
    "TenantOpt",
    "actor",
    "app",
    "console",
    "existing_tenant",
    "fail",
    "load",
    "setup_logging",
    "tenant_or_default",
    "with_runtime",
]

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Engram Memory server.")
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

TenantOpt = Annotated[
    str | None, typer.Option("--tenant", help="the tenant (default: the configured default)")
]


def actor() -> str:
    """Who runs the command, as audit records and receipts name them."""
    return f"cli:{getpass.getuser()}"


def tenant_or_default(runtime: Runtime, tenant: str | None) -> str:
    """The tenant given, else the configured default tenant."""
    return tenant or str(runtime.settings.default_tenant)


async def existing_tenant(runtime: Runtime, tenant: str | None) -> str:
    """The tenant given, else the default one; a ValidationError if it does not exist
    (a command run for a mistyped tenant would otherwise do nothing, or record runs and
    keys for a tenant nobody has)."""
    from engram.errors import ValidationError
    from engram.store import tenants

    assert runtime.db is not None
    t = tenant_or_default(runtime, tenant)
    async with runtime.db.tenant(t) as conn:
        if await tenants.status(conn, t) is None:
            raise ValidationError(
                f"tenant {t!r} does not exist",
                hint="see `engram tenants list`, or create it with `engram tenants create`",
            )
    return t


def load(config: Path | None, **overrides: Any) -> Settings:
    """Build the settings, or exit with the reason they are invalid."""
    try:
        return load_settings(config, **overrides)
    except EngramError as exc:
        fail(exc)


def fail(exc: EngramError) -> NoReturn:
    """Print what went wrong and what to do, then exit with status 2."""
    console.print(f"[bold red]error:[/] {exc.message}")
    if exc.hint:
        console.print(f"[yellow]what to do:[/] {exc.hint}")
    raise typer.Exit(code=2)


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def with_runtime(config: Path | None, data_dir: Path | None, database_url: str | None,
                  work: Callable[[Runtime], Awaitable[T]]) -> T:  # fmt: skip
    """Prepare a runtime (no migrations), open it, run ``work(runtime)``, close it."""
    import asyncio

    from engram.runtime import Runtime

    settings = load(config, data_dir=data_dir, database_url=database_url)
    setup_logging(settings.log_level)
    runtime = Runtime(settings)
    try:
        runtime.prepare(run_migrations=False)

        async def main() -> T:
            await runtime.open()
            try:
                return await work(runtime)
            finally:
                await runtime.close()

        return asyncio.run(main())
    except EngramError as exc:
        fail(exc)
    finally:
        runtime.shutdown()

"""`engram tenants create|list|disable|enable` and `engram apikeys create|list|revoke`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
    existing_tenant,
    tenant_or_default,
    with_runtime,
)

if TYPE_CHECKING:
    from engram.runtime import Runtime

tenants_app = typer.Typer(no_args_is_help=True, help="Tenants (platform administration).")
app.add_typer(tenants_app, name="tenants")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of a tenant.")
app.add_typer(keys_app, name="apikeys")


@tenants_app.command("create")
def tenants_create(
    tenant_id: Annotated[str, typer.Argument(help="the id (letters, digits, . _ -)")],
    name: Annotated[str | None, typer.Option(help="a display name")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a tenant; its admin then gets a key with `engram apikeys create`."""
    from engram.audit import record
    from engram.store import tenants

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        async with rt.db.tenant(tenant_id) as conn:
            row = await tenants.create(conn, tenant_id, name)
            await record(conn, tenant_id, actor=actor(), action="tenant.create", resource=tenant_id)
            return row

    with_runtime(config, data_dir, database_url, work)
    console.print(f"tenant {tenant_id} created")


@tenants_app.command("list")
def tenants_list(
    data_dir: DataDirOpt = None, database_url: DatabaseOpt = None, config: ConfigOpt = None
) -> None:
    """List tenants and their status."""
    from engram.store import tenants

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        async with rt.db.tenant("") as conn:
            return await tenants.list_all(conn)

    table = Table("id", "name", "status", "created")
    for r in with_runtime(config, data_dir, database_url, work):
        table.add_row(r["id"], r["name"], r["status"], r["created_at"].isoformat())
    Console().print(table)


def _set_status(tenant_id: str, status: str, data_dir: DataDirOpt, database_url: DatabaseOpt,
                config: ConfigOpt) -> None:  # fmt: skip
    from engram.audit import record
    from engram.errors import ValidationError
    from engram.store import tenants

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        if status == "disabled" and tenant_id == rt.settings.default_tenant:
            raise ValidationError(
                "the default tenant cannot be disabled",
                hint="it holds the platform admin; disable other tenants only",
            )
        async with rt.db.tenant(tenant_id) as conn:
            await tenants.set_status(conn, tenant_id, status)
            await record(
                conn, tenant_id, actor=actor(), action=f"tenant.{status}", resource=tenant_id
            )

    with_runtime(config, data_dir, database_url, work)
    console.print(f"tenant {tenant_id} {status} (running servers notice within auth.cache_s)")


@tenants_app.command("disable")
def tenants_disable(
    tenant_id: str,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Disable a tenant: its keys and tokens get 403, its data stays."""
    _set_status(tenant_id, "disabled", data_dir, database_url, config)


@tenants_app.command("enable")
def tenants_enable(
    tenant_id: str,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Enable a disabled tenant again."""
    _set_status(tenant_id, "active", data_dir, database_url, config)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="what the key is for")],
    role: Annotated[str, typer.Option(help="admin, writer, reader or auditor")] = "writer",
    tenant: TenantOpt = None,
    read_protected: Annotated[
        bool, typer.Option("--read-protected", help="may read pii/phi/secret fields in plaintext")
    ] = False,
    expires_in_days: Annotated[float | None, typer.Option(min=0.001, help="lifetime")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from engram.audit import record
    from engram.auth.apikeys import new_key
    from engram.auth.principal import Role
    from engram.errors import ValidationError
    from engram.store import apikeys

    key = new_key()

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        if role not in {r.value for r in Role}:
            raise ValidationError(
                f"unknown role {role!r}", hint="use admin, writer, reader or auditor"
            )
        t = await existing_tenant(rt, tenant)
        expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        async with rt.db.tenant(t) as conn:
            await apikeys.create(
                conn, t, key_id=key.key_id, digest=key.digest, name=name, role=role,
                read_protected=read_protected, created_by=actor(), expires_at=expires,
            )  # fmt: skip
            await record(
                conn, t, actor=actor(), action="apikey.create", resource=key.key_id,
                details={"role": role, "read_protected": read_protected},
            )  # fmt: skip

    with_runtime(config, data_dir, database_url, work)
    console.print(f"key {key.key_id} created; it is shown only now:")
    typer.echo(key.token)


@keys_app.command("list")
def keys_list(
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List a tenant's keys (never the secrets)."""
    from engram.store import apikeys

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        async with rt.db.tenant(tenant_or_default(rt, tenant)) as conn:
            return await apikeys.list_for_tenant(conn)

    table = Table("key id", "name", "role", "read_protected", "created", "expires", "revoked")
    for r in with_runtime(config, data_dir, database_url, work):
        table.add_row(
            r["key_id"], r["name"], r["role"], str(r["read_protected"]),
            r["created_at"].isoformat(),
            r["expires_at"].isoformat() if r["expires_at"] else "",
            r["revoked_at"].isoformat() if r["revoked_at"] else "",
        )  # fmt: skip
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key id (egk_<key id>_...)")],
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key (running servers refuse it within auth.cache_s)."""
    from engram.audit import record
    from engram.store import apikeys

    async def work(rt: Runtime) -> Any:
        assert rt.db is not None
        t = tenant_or_default(rt, tenant)
        async with rt.db.tenant(t) as conn:
            await apikeys.revoke(conn, key_id)
            await record(conn, t, actor=actor(), action="apikey.revoke", resource=key_id)

    with_runtime(config, data_dir, database_url, work)
    console.print(f"key {key_id} revoked")

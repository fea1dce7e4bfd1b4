"""`engram keys`: status, rotate, reencrypt, retire, destroy, shred."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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

T = TypeVar("T")

keys_app = typer.Typer(no_args_is_help=True, help="Data keys: rotation and crypto-shredding.")
app.add_typer(keys_app, name="keys")


def _run(config: Path | None, data_dir: Path | None, database_url: str | None, op: str,
         work: Callable[[Runtime], Awaitable[T]], tenant: str | None = None,
         resource: str = "data_keys", user: str | None = None) -> T:  # fmt: skip
    """Run `work(runtime)` with keys open, and audit the outcome as a key operation (the
    ``user`` it concerns appears in the record as a pseudonym)."""
    from engram.audit import record_now

    async def wrapped(rt: Runtime) -> T:
        assert rt.db is not None
        if rt.keyrings is None:
            from engram.errors import ConfigError

            raise ConfigError(
                "encryption is disabled (crypto.enabled is false)",
                hint="set ENGRAM_CRYPTO__ENABLED=true to manage keys",
            )
        t = await existing_tenant(rt, tenant)
        who = actor()
        subjects = [("user", user)] if user else []
        # The outcome goes to the audit log (this process has no /metrics to scrape; the
        # servers export the runs' states, sampled from the database).
        try:
            result = await work(rt)
        except Exception as exc:
            if op != "status":
                await record_now(rt.db, t, actor=who, action=f"keys.{op}", resource=resource,
                                 outcome="failure", subjects=subjects,
                                 # an error may quote the user id: the record must not
                                 reason=type(exc).__name__ if user else str(exc)[:500])  # fmt: skip
            raise
        if op != "status":
            await record_now(rt.db, t, actor=who, action=f"keys.{op}", resource=resource,
                             details={"result": str(result)[:500]}, subjects=subjects)  # fmt: skip
        return result

    return with_runtime(config, data_dir, database_url, wrapped)


@keys_app.command("status")
def status_cmd(
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Fields per key version, and the latest re-encryption runs."""
    from engram.crypto import rotation

    async def work(rt: Runtime) -> Any:
        assert rt.key_pool is not None and rt.keyrings is not None
        t = tenant_or_default(rt, tenant)
        return await asyncio.to_thread(rotation.status, rt.key_pool, rt.keyrings, t)

    st = _run(config, data_dir, database_url, "status", work, tenant)
    out = Console(width=max(Console().width, 120))
    table = Table("key", "user", "version", "state", "KEK", "fields", title="Data keys")
    for v in st.versions:
        table.add_row(v["key_id"], v["user"] or "(tenant)", str(v["version"]), v["state"],
                      v["kek"] or "-", str(v["fields"]))  # fmt: skip
    out.print(table)
    runs = Table("run", "status", "pass", "fields moved", "started", "finished", "error",
                 title="Re-encryption runs")  # fmt: skip
    for r in st.runs:
        runs.add_row(str(r["id"]), r["status"], str(r["passes"]), str(r["rows_done"]),
                     f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
                     f"{r['finished_at']:%Y-%m-%d %H:%M:%S}" if r["finished_at"] else "-",
                     r["error"] or "")  # fmt: skip
    out.print(runs)
    old = sum(v["fields"] for v in st.versions if v["state"] not in ("primary", "destroyed"))
    gone = sum(v["fields"] for v in st.versions if v["state"] == "destroyed")
    out.print(f"fields on a non-primary version: {old}")
    if gone:
        out.print(f"fields under destroyed (shredded) keys, unreadable for good: {gone}")
    if st.unclassified:
        out.print(
            f"users, sessions and messages stored before their fields were classified: "
            f"{st.unclassified} (`engram keys reencrypt` classifies and seals them)"
        )


@keys_app.command("rotate")
def rotate_cmd(
    tenant: TenantOpt = None,
    kek: Annotated[
        bool, typer.Option("--kek", help="a new key-encryption key; rewraps the data keys only")
    ] = False,
    now: Annotated[
        bool, typer.Option("--now", help="re-encrypt in this process instead of queueing it")
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A new data-key version (then re-encryption), or with --kek a new KEK."""
    from engram.crypto import rotation
    from engram.jobs.keys import start_reencrypt

    async def work(rt: Runtime) -> str:
        assert rt.keyrings is not None
        t = tenant_or_default(rt, tenant)
        if kek:
            kek_id, n = await asyncio.to_thread(rotation.rotate_kek, rt.keyrings, [t])
            return f"new KEK {kek_id}; {n} data key version(s) rewrapped"
        n = await asyncio.to_thread(rotation.rotate_data_keys, rt.keyrings, t)
        if now:
            run_id = await asyncio.to_thread(_new_run, rt, t)
            moved = await asyncio.to_thread(_reencrypt, rt, t, run_id)
            return f"{n} data key(s) rotated; {moved} field(s) re-encrypted (run {run_id})"
        run_id = await start_reencrypt(rt, t)
        return f"{n} data key(s) rotated; re-encryption run {run_id} queued for the workers"

    console.print(
        _run(config, data_dir, database_url, "rotate_kek" if kek else "rotate", work, tenant)
    )


def _new_run(rt: Runtime, tenant: str) -> int:
    from engram.store import keys

    assert rt.key_pool is not None
    with rt.key_pool.tenant(tenant) as conn:
        return keys.start_run(conn)


def _reencrypt(rt: Runtime, tenant: str, run_id: int) -> int:
    from engram.crypto.rotation import reencrypt
    from engram.memory.unclassified import seal_unclassified

    assert rt.key_pool is not None and rt.keyrings is not None
    c = rt.settings.crypto
    sealed = seal_unclassified(rt.key_pool, rt.protector, tenant, c.reencrypt_batch)
    moved: int = reencrypt(rt.key_pool, rt.keyrings, tenant, run_id,
                           batch=c.reencrypt_batch, pause_s=c.reencrypt_pause_s)  # fmt: skip
    return moved + sealed


@keys_app.command("reencrypt")
def reencrypt_cmd(
    tenant: TenantOpt = None,
    run_id: Annotated[int | None, typer.Option("--run", help="resume this run")] = None,
    now: Annotated[bool, typer.Option("--now", help="run here instead of queueing it")] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Move every protected field to its key's primary version (resumable)."""
    from engram.jobs.keys import start_reencrypt

    async def work(rt: Runtime) -> str:
        t = tenant_or_default(rt, tenant)
        if not now:
            return f"re-encryption run {await start_reencrypt(rt, t)} queued for the workers"
        rid = run_id if run_id is not None else await asyncio.to_thread(_new_run, rt, t)
        moved = await asyncio.to_thread(_reencrypt, rt, t, rid)
        return f"run {rid}: {moved} field(s) re-encrypted"

    console.print(_run(config, data_dir, database_url, "reencrypt", work, tenant))


@keys_app.command("reclassify")
def reclassify_cmd(
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Classify every text stored in clear again; seal what is protected now (after
    turning crypto.enabled on, or adding a class to crypto.protect). Safe to re-run."""
    from engram.memory.reclassify import reclassify

    async def work(rt: Runtime) -> str:
        assert rt.key_pool is not None and rt.embedder is not None
        t = tenant_or_default(rt, tenant)
        s = rt.settings
        done = await asyncio.to_thread(
            reclassify, rt.key_pool, rt.protector, t, rt.embedder.embed,
            s.text_search_config, s.crypto.reencrypt_batch,
        )  # fmt: skip
        return str(done)

    console.print(_run(config, data_dir, database_url, "reclassify", work, tenant))


@keys_app.command("retire")
def retire_cmd(
    version: Annotated[int, typer.Argument(help="the key version to retire (disable)")],
    tenant: TenantOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Disable a version; refused while any field still uses it."""
    from engram.crypto import rotation

    async def work(rt: Runtime) -> int:
        assert rt.key_pool is not None and rt.keyrings is not None
        t = tenant_or_default(rt, tenant)
        n: int = await asyncio.to_thread(rotation.retire, rt.key_pool, rt.keyrings, t, version)
        return n

    n = _run(config, data_dir, database_url, "retire", work, tenant, f"version {version}")
    console.print(f"version {version} retired on {n} key(s); `engram keys destroy` erases it")


@keys_app.command("destroy")
def destroy_cmd(
    version: Annotated[int, typer.Argument(help="a retired key version")],
    tenant: TenantOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Erase a retired version's wrapped keys for good (asks first)."""
    from engram.crypto import rotation

    if not yes:
        typer.confirm(
            f"Destroy data-key version {version}? Anything still encrypted with it is lost.",
            abort=True,
        )

    async def work(rt: Runtime) -> int:
        assert rt.keyrings is not None
        t = tenant_or_default(rt, tenant)
        n: int = await asyncio.to_thread(rotation.destroy, rt.keyrings, t, version)
        return n

    n = _run(config, data_dir, database_url, "destroy", work, tenant, f"version {version}")
    console.print(f"version {version} destroyed on {n} key(s)")


@keys_app.command("shred")
def shred_cmd(
    user: Annotated[str, typer.Option("--user", help="the user whose data key to destroy")],
    tenant: TenantOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Crypto-shred a user: their protected data becomes unreadable everywhere."""
    from engram.crypto import rotation

    if not yes:
        typer.confirm(f"Shred the data key of user {user!r}? This cannot be undone.", abort=True)

    async def work(rt: Runtime) -> int:
        assert rt.keyrings is not None
        t = tenant_or_default(rt, tenant)
        n: int = await asyncio.to_thread(rotation.shred_user, rt.keyrings, t, user)
        return n

    n = _run(config, data_dir, database_url, "shred", work, tenant, f"/users/{user}", user)
    console.print(f"user {user!r}: {n} key version(s) destroyed" if n else
                  f"user {user!r} has no data key; nothing to shred")  # fmt: skip

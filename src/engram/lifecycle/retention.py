"""The retention job: resume unfinished archives, archive or delete expired sessions,
delete long-invalidated facts. Run by the worker on a schedule, or `engram retention run`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from engram.config import Settings
from engram.lifecycle.archive import archive_session
from engram.lifecycle.blobs import BlobStore, build_blob_store
from engram.lifecycle.policy import effective_policy
from engram.store import archives, retention
from engram.store.db import Database

__all__ = ["run_retention", "tenants_to_scan"]

logger = logging.getLogger(__name__)


async def tenants_to_scan(db: Database, settings: Settings) -> list[str]:
    """The default tenant, configured ones, and those of a tenant registry if present."""
    async with db.tenant(settings.default_tenant) as conn:
        registered = await retention.known_tenants(conn)
    names = [settings.default_tenant, *settings.lifecycle.tenants, *registered]
    return list(dict.fromkeys(names))


async def run_retention(
    db: Database,
    settings: Settings,
    *,
    tenants: list[str] | None = None,
    now: datetime | None = None,
    store_factory: Callable[[], BlobStore] | None = None,
) -> dict[str, dict[str, int]]:
    """One pass over every tenant; what was archived, deleted and cleaned, per tenant."""
    now = now or datetime.now(UTC)
    store: BlobStore | None = None

    def blob_store() -> BlobStore:
        nonlocal store
        if store is None:
            factory = store_factory or (
                lambda: build_blob_store(settings.lifecycle.blob, settings.data_dir)
            )
            store = factory()
        return store

    report: dict[str, dict[str, int]] = {}
    for tenant in tenants or await tenants_to_scan(db, settings):
        done = {
            "archived": 0,
            "archived_messages": 0,
            "deleted": 0,
            "deleted_messages": 0,
            "facts_deleted": 0,
            "failed": 0,
        }
        async with db.tenant(tenant) as conn:
            policy = await effective_policy(conn, settings.lifecycle)
            leftover = await archives.unfinished(conn)
        # Attempts a crash interrupted come first; the session's rows are still there.
        for record in leftover:
            counts = await archive_session(
                db, blob_store(), tenant, record["session_id"], record["user_id"]
            )
            if counts:
                done["archived"] += 1
                done["archived_messages"] += counts["messages"]
        if policy.retention_days is not None:
            cutoff = now - timedelta(days=policy.retention_days)
            skip: list[str] = []
            while True:
                async with db.tenant(tenant) as conn:
                    batch = await retention.expired_sessions(
                        conn, cutoff, limit=settings.lifecycle.batch_size, skip=skip
                    )
                if not batch:
                    break
                for s in batch:
                    try:
                        if policy.action == "archive":
                            counts = await archive_session(
                                db,
                                blob_store(),
                                tenant,
                                s["session_id"],
                                s["user_id"],
                                cutoff=cutoff,
                            )
                            if counts:
                                done["archived"] += 1
                                done["archived_messages"] += counts["messages"]
                        else:
                            async with db.tenant(tenant) as conn:
                                n = await retention.delete_session(conn, s["session_id"])
                            done["deleted"] += 1
                            done["deleted_messages"] += n
                    except Exception:  # one bad session must not stop the others
                        logger.exception("retention of session %s failed", s["session_id"])
                        done["failed"] += 1
                        skip.append(s["session_id"])
        if policy.fact_cleanup_days is not None:
            async with db.tenant(tenant) as conn:
                done["facts_deleted"] = await retention.delete_invalid_facts(
                    conn, now - timedelta(days=policy.fact_cleanup_days)
                )
        logger.info("retention for tenant %s: %s", tenant, done)
        report[tenant] = done
    return report

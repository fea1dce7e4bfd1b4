"""What `engram jobs list|retry` does: extraction jobs with their failure reasons."""

from __future__ import annotations

import uuid as uuidlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import procrastinate
from procrastinate.jobs import Job

from engram.errors import NotFoundError, ValidationError
from engram.store import episodes
from engram.store.db import Database

__all__ = ["JobRow", "list_jobs", "retry_job"]


@dataclass(frozen=True)
class JobRow:
    id: int
    status: str
    tenant: str
    episode: str
    attempts: int
    error: str | None


def _target(job: Job) -> tuple[str, str]:
    """(tenant, episode uuid) of an extraction job."""
    return str(job.task_kwargs["tenant_id"]), str(job.task_kwargs["episode_uuid"])


async def list_jobs(queue: procrastinate.App, db: Database, status: str | None) -> list[JobRow]:
    """Extraction jobs (newest last), with the reason the last attempt failed."""
    jobs = list(await queue.job_manager.list_jobs_async(queue=episodes.QUEUE, status=status))
    by_tenant: dict[str, list[uuidlib.UUID]] = defaultdict(list)
    for job in jobs:
        tenant, episode = _target(job)
        by_tenant[tenant].append(uuidlib.UUID(episode))
    details: dict[str, dict[str, object]] = {}
    for tenant, ids in by_tenant.items():
        async with db.tenant(tenant) as conn:
            details.update(await episodes.errors_for(conn, ids))
    rows = []
    for job in jobs:
        tenant, episode = _target(job)
        d = details.get(episode, {})
        rows.append(
            JobRow(
                id=int(job.id or 0),
                status=str(job.status),
                tenant=tenant,
                episode=episode,
                attempts=int(str(d.get("attempts", 0))),
                error=str(d["error"]) if d.get("error") else None,
            )
        )
    return rows


async def retry_job(queue: procrastinate.App, db: Database, job_id: int) -> None:
    """Run a failed job again now."""
    found = list(await queue.job_manager.list_jobs_async(id=job_id))
    if not found or found[0].queue != episodes.QUEUE:
        raise NotFoundError("job", str(job_id))
    job = found[0]
    if str(job.status) != "failed":
        raise ValidationError(
            f"job {job_id} is {job.status}, not failed", hint="only failed jobs can be retried"
        )
    tenant, episode = _target(job)
    async with db.tenant(tenant) as conn:
        await episodes.reset(conn, uuidlib.UUID(episode))
    await queue.job_manager.retry_job_by_id_async(job_id, retry_at=datetime.now(UTC))

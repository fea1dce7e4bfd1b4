"""The procrastinate job queue in Engram's own PostgreSQL, and the extraction worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from typing import Any

import procrastinate
import psycopg
from procrastinate import RetryDecision, RetryStrategy
from procrastinate.jobs import Job
from procrastinate.worker import Worker

from engram.crypto.rotation import reencrypt
from engram.errors import EmbeddingError, EngramError, ExtractionError, UnavailableError
from engram.graph.ingest import GraphSettings, process_episode
from engram.jobs.deps import JobDeps
from engram.jobs.keys import rotate_due
from engram.jobs.tasks import (
    CLEANUP_TASK,
    MAINTENANCE_QUEUE,
    REENCRYPT_TASK,
    RETENTION_TASK,
    ROTATE_TASK,
)
from engram.lifecycle.retention import run_retention
from engram.memory.unclassified import seal_unclassified
from engram.store import episodes
from engram.store.db import outage

__all__ = ["build_queue", "run_worker"]

logger = logging.getLogger(__name__)


def transient(exc: BaseException) -> bool:
    """Whether a job's failure may pass if the job runs again later: a dependency down
    (the database, a key provider, a model server), a conflict with a concurrent write.
    A program error (a value or statement the database refuses, a bug) or a refusal by
    the model would only repeat, and spend tokens: its job fails at once."""
    if isinstance(exc, ExtractionError):
        return exc.transient
    if isinstance(exc, UnavailableError | EmbeddingError | OSError):
        return True  # OSError: the network (ConnectionError, TimeoutError) among others
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return True  # an entity stored meanwhile by another writer: the retry finds it
    return outage(exc)


class _Retry(RetryStrategy):
    """Back off and retry transient failures; fail the others at once (see transient)."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not transient(exception):
            return None
        return super().get_retry_decision(exception=exception, job=job)


def build_queue(
    dsn: str, runtime: JobDeps, *, prepare_threshold: int | None = 5
) -> procrastinate.App:
    """A procrastinate app whose extraction task uses the runtime's pool and models."""
    connector = procrastinate.PsycopgConnector(
        conninfo=dsn, kwargs={"prepare_threshold": prepare_threshold}
    )
    app = procrastinate.App(connector=connector)
    w = runtime.settings.worker
    # procrastinate annotates an int; the setting's float works the same (seconds).
    retry = _Retry(
        max_attempts=w.max_attempts,
        exponential_wait=w.retry_wait_s,  # type: ignore[arg-type]
    )

    @app.task(name=episodes.TASK, queue=episodes.QUEUE, retry=retry, pass_context=True)
    async def extract_episode(
        context: procrastinate.JobContext, tenant_id: str, episode_uuid: str
    ) -> None:
        assert runtime.db is not None and runtime.batcher is not None
        episode = uuidlib.UUID(episode_uuid)
        try:
            outcome = await process_episode(
                runtime.db, runtime.batcher, runtime.extractor, tenant_id, episode,
                GraphSettings(
                    entity_threshold=runtime.settings.extractor.entity_threshold,
                    fact_threshold=runtime.settings.extractor.fact_threshold,
                    ts_config=runtime.settings.text_search_config,
                    batch=runtime.settings.worker.batch,
                    name_chars=runtime.settings.extractor.max_name_chars,
                    fact_chars=runtime.settings.extractor.max_fact_chars,
                ),
                runtime.protector, context.job.id,
            )  # fmt: skip
        except Exception as exc:
            reason = str(exc) if isinstance(exc, EngramError) else f"{type(exc).__name__}: {exc}"
            usage = exc.usage if isinstance(exc, ExtractionError) else None
            async with runtime.db.tenant(tenant_id) as conn:
                await episodes.mark_failed(conn, episode, reason, usage)
            logger.warning("extraction of episode %s failed: %s", episode_uuid, reason)
            raise
        logger.debug("episode %s: %s", episode_uuid, outcome)

    @app.task(name=REENCRYPT_TASK, queue=MAINTENANCE_QUEUE, retry=retry)
    async def reencrypt_task(tenant_id: str, run_id: int) -> None:
        assert runtime.key_pool is not None and runtime.keyrings is not None
        c = runtime.settings.crypto
        try:
            # Rows stored before their fields were encrypted, then every ciphertext.
            await asyncio.to_thread(
                seal_unclassified, runtime.key_pool, runtime.protector, tenant_id,
                c.reencrypt_batch,
            )  # fmt: skip
            moved = await asyncio.to_thread(
                reencrypt, runtime.key_pool, runtime.keyrings, tenant_id, run_id,
                batch=c.reencrypt_batch, pause_s=c.reencrypt_pause_s,
                on_batch=runtime.metrics.reencrypted_rows.inc,
            )  # fmt: skip
        except Exception:
            runtime.metrics.key_rotations.labels(operation="reencrypt", outcome="failed").inc()
            raise
        runtime.metrics.key_rotations.labels(operation="reencrypt", outcome="ok").inc()
        logger.info("re-encryption run %s of tenant %s moved %d field(s)", run_id, tenant_id, moved)

    # Retention, archival and fact cleanup on the configured schedule; the shared lock
    # keeps one run at a time, the queueing lock one queued run.
    @app.periodic(cron=runtime.settings.lifecycle.schedule, periodic_id="retention")
    @app.task(
        name=RETENTION_TASK,
        queue=MAINTENANCE_QUEUE,
        lock="engram-retention",
        queueing_lock="engram-retention",
        pass_context=False,
    )
    async def retention(timestamp: int) -> None:
        assert runtime.db is not None
        report = await run_retention(runtime.db, runtime.settings)
        logger.info("retention run of %s: %s", timestamp, report)

    # The jobs table would otherwise grow by a row (and its events) per episode for ever.
    @app.periodic(cron="41 * * * *", periodic_id="remove-succeeded-jobs")
    @app.task(
        name=CLEANUP_TASK,
        queue=MAINTENANCE_QUEUE,
        queueing_lock="engram-remove-succeeded-jobs",
        pass_context=True,
    )
    async def remove_succeeded_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        hours = runtime.settings.worker.keep_succeeded_hours
        await context.app.job_manager.delete_old_jobs(nb_hours=hours, include_failed=False)
        logger.info("removed jobs that succeeded more than %d hours before %s", hours, timestamp)

    if runtime.settings.crypto.rotate_every_days:

        @app.periodic(cron="17 3 * * *", periodic_id="rotate-keys")
        @app.task(name=ROTATE_TASK, queue=MAINTENANCE_QUEUE, pass_context=False)
        async def rotate_keys(timestamp: int) -> None:
            await rotate_due(runtime, timestamp)

    return app


class _Worker(Worker):
    """procrastinate's worker, which also looks for jobs as soon as one has ended.

    A user's jobs share a lock, so the next one can be taken only once the one before it
    is recorded as ended. The stock worker looks again only on a notification of a new
    job or at the next poll: with free slots (concurrency > 1) and the backlog of a single
    user, every job would wait up to the poll interval."""

    async def _persist_job_status(self, *args: Any, **kwargs: Any) -> None:
        await super()._persist_job_status(*args, **kwargs)
        self._new_job_event.set()


async def run_worker(
    app: procrastinate.App,
    concurrency: int = 1,
    stalled_after_s: float = 30.0,
    *,
    listen_notify: bool = True,
    poll_interval_s: float = 1.0,
) -> None:
    """Process extraction jobs until cancelled (the app must be open).

    ``listen_notify=False`` behind a transaction pooler: LISTEN is session state, so a
    listener there would never be told of a job; the worker polls instead.
    """
    stop = asyncio.Event()
    rescuer = asyncio.create_task(_rescue_stalled(app, stalled_after_s, stop))
    try:
        app.perform_import_paths()  # type: ignore[no-untyped-call]
        worker = _Worker(
            app=app,
            queues=[episodes.QUEUE, MAINTENANCE_QUEUE],
            concurrency=concurrency,
            install_signal_handlers=False,
            update_heartbeat_interval=max(1.0, stalled_after_s / 6),
            stalled_worker_timeout=stalled_after_s,
            listen_notify=listen_notify,
            fetch_job_polling_interval=poll_interval_s,
        )
        await worker.run()  # type: ignore[no-untyped-call]
    finally:
        # Told by an event, not only by cancel(): a cancel that lands while the rescuer
        # waits on the database can be swallowed on the way, and shutdown would then
        # wait for it for ever.
        stop.set()
        done, _ = await asyncio.wait({rescuer}, timeout=5)
        if not done:
            rescuer.cancel()


async def _rescue_stalled(
    app: procrastinate.App, stalled_after_s: float, stop: asyncio.Event
) -> None:
    """Requeue jobs of workers that died mid-job (their work was rolled back)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), stalled_after_s / 2)
        if stop.is_set():
            return
        try:
            stalled = [
                job
                for queue in (episodes.QUEUE, MAINTENANCE_QUEUE)
                for job in await app.job_manager.get_stalled_jobs(
                    queue=queue, seconds_since_heartbeat=stalled_after_s
                )
            ]
            for job in stalled:
                logger.warning("job %s stalled (its worker died); retrying it", job.id)
                await app.job_manager.retry_job(job)
        except Exception:  # keep rescuing on the next round; the database may be back
            logger.exception("could not check for stalled jobs")

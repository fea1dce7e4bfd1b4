"""The running system: database (embedded or external), migrations, embedder, pool.

``prepare()`` does the blocking start-up work (start PostgreSQL, migrate, load the
model, check the schema) before the event loop serves anything; ``open()`` and
``close()`` run in the ASGI lifespan; ``shutdown()`` stops the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

import procrastinate
import psycopg

from engram.config import Settings
from engram.crypto.protect import Keyrings, Protector
from engram.crypto.sensitivity import Sensitivity
from engram.embed import Embedder, build_embedder
from engram.embed.batcher import BatchingEmbedder
from engram.errors import ConfigError, SchemaMismatchError, UnavailableError
from engram.extract import Extractor, build_extractor
from engram.jobs.queue import build_queue, run_worker
from engram.metrics.registry import Metrics
from engram.metrics.sampler import Sampler
from engram.store import migrate
from engram.store.db import Database
from engram.store.embedded import EmbeddedPostgres
from engram.store.keys import KeyPool, PgKeyStore
from engram.store.pooler import behind_transaction_pooler
from engram.store.watchdog import Watchdog

__all__ = ["Runtime", "resolve_api_key"]

logger = logging.getLogger(__name__)


def resolve_api_key(settings: Settings) -> str:
    """The configured API key, or one generated once and kept in data_dir/api_key (0600)."""
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value()
        if settings.profile == "production" and len(key) < 24:
            raise ConfigError(
                "the API key is too short for the production profile",
                hint="use at least 24 random characters",
            )
        return key
    path = Path(settings.data_dir).expanduser() / "api_key"
    if path.exists():
        st = path.stat()
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            # Anyone else who could write it could make themselves a platform admin.
            raise ConfigError(
                f"the API key file {path} belongs to uid {st.st_uid} with mode "
                f"{stat.filemode(st.st_mode)}; it must be this user's (uid {os.geteuid()}) "
                "and readable by it only",
                hint=f"if you did not write it, delete {path} (a new key is generated) and "
                f"look for who did; else run: chown {os.geteuid()} {path}; chmod 600 {path}",
            )
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch(mode=0o600)
    tmp.write_text(key + "\n")
    tmp.rename(path)
    logger.warning("no API key configured; generated one in %s", path)
    return key


class Runtime:
    """Everything a server or worker process holds for its lifetime."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedPostgres | None = None
        self.embedder: Embedder | None = None
        self.batcher: BatchingEmbedder | None = None
        self.db: Database | None = None
        self.extractor: Extractor = build_extractor(settings.extractor)
        self.queue: procrastinate.App | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False  # set by close(): the worker is not started again
        self.metrics = Metrics(settings.metrics)
        self._sampler: Sampler | None = None
        self.watchdog: Watchdog | None = None  # restarts the embedded server (serve only)
        self.app_dsn = ""
        self.owner_dsn: str | None = None
        self.api_key = ""
        self.key_pool: KeyPool | None = None
        self.keyrings: Keyrings | None = None
        self.protector = Protector(settings.crypto, None)
        # Set by check_schema: PgBouncer in transaction mode between us and PostgreSQL.
        self.transaction_pooler = False

    def prepare(self, *, run_migrations: bool = True) -> None:
        """Start the database if embedded, load the embedder, migrate, check the schema."""
        s = self.settings
        self.api_key = resolve_api_key(s)
        self.start_database()
        self.embedder = build_embedder(s.embedder)
        if run_migrations and self.owner_dsn is not None:
            applied = migrate.migrate(self.owner_dsn, s, self.embedder.id, self.embedder.dimensions)
            for name in applied:
                logger.info("applied migration %s", name)
        self.check_schema()

    def start_database(self) -> None:
        """Resolve the DSNs; start and bootstrap the embedded server when no URL is given."""
        s = self.settings
        if s.database_url is None:
            self.embedded = EmbeddedPostgres(Path(s.data_dir))
            self.embedded.start()
            migrate.bootstrap_embedded(
                self.embedded.superuser_dsn, s.owner_role, s.app_role, s.database_name
            )
            self.owner_dsn = self.embedded.dsn(s.owner_role, s.database_name)
            self.app_dsn = self.embedded.dsn(s.app_role, s.database_name)
        else:
            self.app_dsn = s.database_url.get_secret_value()
            self.owner_dsn = (
                s.migrate_database_url.get_secret_value() if s.migrate_database_url else None
            )

    def check_schema(self) -> None:
        """Refuse to serve a database with pending migrations or other vector dimensions."""
        assert self.embedder is not None
        try:
            with psycopg.connect(self.app_dsn, autocommit=True, connect_timeout=10) as conn:
                if not migrate.has_schema(conn):
                    raise SchemaMismatchError(
                        "the database has no Engram schema",
                        hint="run `engram migrate --database-url OWNER_DSN` first",
                    )
                migrate.check_meta(conn, self.embedder.id, self.embedder.dimensions)
                self.transaction_pooler = behind_transaction_pooler(conn, self.settings.pool.pooler)
        except psycopg.OperationalError as exc:
            raise UnavailableError(
                f"cannot connect to the database: {str(exc).strip()}",
                hint="check --database-url / ENGRAM_DATABASE_URL and that PostgreSQL runs",
            ) from exc
        if self.transaction_pooler:
            logger.info(
                "behind a transaction pooler: no server-side prepared statements; "
                "workers poll for jobs every %ss instead of LISTEN",
                self.settings.worker.poll_interval_s,
            )
        pending = migrate.pending_migrations(self.app_dsn)
        if pending:
            raise SchemaMismatchError(
                f"migrations not applied: {', '.join(pending)}",
                hint="run `engram migrate` with the owner role first",
            )

    async def open(
        self, *, worker: bool = False, sampler: bool = False, watchdog: bool = False
    ) -> None:
        """Open the pool, the embedding batcher and the job queue; start a worker, the
        metrics sampler and the embedded server's watchdog if asked."""
        assert self.embedder is not None
        p = self.settings.pool
        self.db = Database(
            self.app_dsn, min_size=p.min_size, max_size=p.max_size, timeout_s=p.timeout_s,
            prepare_threshold=self.prepare_threshold,
        )  # fmt: skip
        await self.db.open()
        self.open_keys()
        self.batcher = BatchingEmbedder(self.embedder, max_batch=self.settings.embedder.max_batch)
        self.queue = build_queue(self.app_dsn, self, prepare_threshold=self.prepare_threshold)
        await self.queue.open_async()
        if worker:
            self._worker = asyncio.create_task(
                self.run_worker(self.settings.worker.concurrency), name="engram-worker"
            )
        if sampler:
            interval = self.settings.metrics.sample_interval_s
            levels = [int(Sensitivity.parse(p)) for p in self.settings.crypto.protect]
            self._sampler = Sampler(
                self.app_dsn, self.metrics, interval, self.tenants, levels,
                prepare_threshold=self.prepare_threshold,
            )  # fmt: skip
            self._sampler.start()
        if watchdog and self.embedded is not None:
            e = self.settings.embedded_postgres
            self.watchdog = Watchdog(
                self.embedded, interval_s=e.watch_interval_s,
                unhealthy_after=e.unhealthy_after_failures, reconnect=self._reconnect,
            )  # fmt: skip
            self.watchdog.start()

    async def _reconnect(self) -> None:
        """Replace the pools' connections to a server that was restarted."""
        if self.db is not None:
            await self.db.pool.check()
        if self.key_pool is not None:
            await asyncio.to_thread(self.key_pool.pool.check)

    @property
    def database_down(self) -> bool:
        """True while the embedded server is being restarted."""
        return self.watchdog is not None and self.watchdog.down

    async def tenants(self) -> list[str]:
        """The tenants this deployment serves: the default one and every registered one."""
        from engram.lifecycle.retention import tenants_to_scan

        assert self.db is not None
        return await tenants_to_scan(self.db, self.settings)

    def open_keys(self) -> None:
        """The key provider, the keyrings (one per tenant) and the field protector."""
        if not self.settings.crypto.enabled or self.keyrings is not None:
            return
        pool = KeyPool(self.app_dsn, prepare_threshold=self.prepare_threshold)

        def store_for(tenant: str) -> PgKeyStore:
            return PgKeyStore(pool, tenant)

        self.key_pool = pool
        self.keyrings = Keyrings.from_settings(
            self.settings.crypto, Path(self.settings.data_dir).expanduser(), store_for
        )
        self.protector = Protector(self.settings.crypto, self.keyrings)

    def close_keys(self) -> None:
        if self.keyrings is not None:
            self.keyrings.close()
            self.keyrings = None
        if self.key_pool is not None:
            self.key_pool.close()
            self.key_pool = None
        self.protector = Protector(self.settings.crypto, None)

    @property
    def prepare_threshold(self) -> int | None:
        """psycopg's prepare_threshold for the app's connections (None: never prepare)."""
        return None if self.transaction_pooler else self.settings.pool.prepare_threshold

    async def run_worker(self, concurrency: int) -> None:
        """Process extraction jobs until cancelled (the queue must be open). A worker
        that stops on its own (its database connection was lost) starts again."""
        assert self.queue is not None
        w = self.settings.worker
        while True:
            try:
                await run_worker(
                    self.queue, concurrency, w.stalled_after_s,
                    listen_notify=not self.transaction_pooler, poll_interval_s=w.poll_interval_s,
                )  # fmt: skip
                reason = "it stopped"
            except Exception as exc:  # e.g. procrastinate's ConnectorException
                reason = f"{type(exc).__name__}: {str(exc).strip()}"
            task = asyncio.current_task()
            if self._closing or (task is not None and task.cancelling()):
                # Asked to stop: a cancel swallowed on the way (the worker then returns as
                # if it had stopped on its own) must not start it again, or close() waits
                # for ever (seen once: `engram serve` hung at SIGTERM after a restart).
                return
            logger.warning("the extraction worker stopped (%s); starting it again in 5 s", reason)
            await asyncio.sleep(5.0)

    async def close(self) -> None:
        if self.watchdog is not None:
            await self.watchdog.stop()
        if self._sampler is not None:
            await self._sampler.stop()
        if self._worker is not None:
            self._closing = True
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self.queue is not None:
            await self.queue.close_async()
        if self.batcher is not None:
            await self.batcher.aclose()
        if self.db is not None:
            await self.db.close()
        self.close_keys()

    def shutdown(self) -> None:
        """Release the models and stop the embedded server, if this process started it."""
        if self.embedder is not None:
            self.embedder.close()
        close = getattr(self.extractor, "close", None)
        if close is not None:
            close()
        if self.embedded is not None:
            self.embedded.stop()

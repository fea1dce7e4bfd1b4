"""The connection pool and the per-transaction tenant context."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Generic, TypeVar

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from engram.errors import OverloadedError, UnavailableError

__all__ = ["Conn", "Database", "Pending", "outage"]

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[dict[str, Any]]
T = TypeVar("T")

# SQLSTATE classes of failures that retrying later may get past: the connection (08),
# a transaction rolled back for a conflict or deadlock (40), insufficient resources
# (53), a lock not available (55P03), an operator intervention such as a shutdown or a
# cancelled statement (57), a system error such as I/O (58).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def outage(exc: BaseException) -> bool:
    """Whether a database error is the database being unavailable for now (the
    connection lost or refused, the server shutting down, out of connections), which
    retrying later may get past, rather than a statement it refuses every time (an index
    row too large, a bad value, a violated constraint)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # raised by the client: the connection is gone or unusable
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in _TRANSIENT_CLASSES or state == "55P03"


class Pending(Generic[T]):
    """A query sent but not read yet. On a connection in pipeline mode, the queries sent
    one after the other and read afterwards share one round trip; a statement's error is
    raised by `result` (of it, or of a query sent after it). `read` makes the result of
    the query's one row (None if it has none), or with `many` of the list of its rows."""

    __slots__ = ("_cursor", "_many", "_read")

    def __init__(
        self,
        cursor: psycopg.AsyncCursor[dict[str, Any]],
        read: Callable[[Any], T],
        *,
        many: bool = False,
    ) -> None:
        self._cursor, self._read, self._many = cursor, read, many

    async def result(self) -> T:
        cur = self._cursor
        return self._read(await cur.fetchall() if self._many else await cur.fetchone())


class Database:
    """An async pool of connections as the app role; every unit of work is one transaction."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        timeout_s: float,
        prepare_threshold: int | None = 5,
    ) -> None:
        # prepare_threshold=None behind a transaction pooler: a statement prepared on one
        # server connection is unknown on the next one ("prepared statement does not
        # exist"), or clashes with another client's of the same name.
        self.timeout_s = timeout_s
        # The pool's connection attempts (succeeded, failed) at the last timed-out wait,
        # and whether they said that the database is down.
        self._attempts, self._down = (0, 0), False
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            open=False,
            configure=self._configure,
            kwargs={
                "row_factory": dict_row,
                "autocommit": True,
                "prepare_threshold": prepare_threshold,
            },
            connection_class=psycopg.AsyncConnection[dict[str, Any]],
        )

    @staticmethod
    async def _configure(conn: Conn) -> None:
        await register_vector_async(conn)

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    def unavailable(self, exc: PoolTimeout) -> UnavailableError:
        """What a wait for a connection that timed out means: overload (retry shortly),
        unless the pool's attempts to open connections since the last such wait all
        failed (the database is down or refuses us; it stays so until one succeeds)."""
        stats = self.pool.get_stats()
        failed = stats.get("connections_errors", 0)
        opened = stats.get("connections_num", 0) - failed  # it counts attempts
        if failed > self._attempts[1] and opened == self._attempts[0]:
            self._down = True  # only failures since the last look
        elif opened > self._attempts[0] and failed == self._attempts[1]:
            self._down = False  # only successes
        self._attempts = (opened, failed)
        if not self._down:
            return OverloadedError(
                f"server overloaded: no database connection free within {self.timeout_s:g}s",
                retry_after_s=max(1, math.ceil(self.timeout_s)),
                hint="retry after the Retry-After seconds; if it persists, raise pool.max_size"
                " or lower the limits.* concurrency settings",
            )
        return UnavailableError(
            f"the database is not reachable (no connection could be opened within"
            f" {self.timeout_s:g}s)",
            hint="check that PostgreSQL is running; Engram reconnects by itself",
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection of the pool, outside any tenant (autocommit); a timed-out wait
        raises OverloadedError or UnavailableError (see `unavailable`)."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise self.unavailable(exc) from exc

    @asynccontextmanager
    async def tenant(self, tenant_id: str, *, pipeline: bool = False) -> AsyncIterator[Conn]:
        """Yield a connection inside a transaction bound to ``tenant_id`` (RLS).

        ``pipeline``: in pipeline mode, where a statement's errors surface when its results
        are read (or at commit); BEGIN and the tenant go out with the first statement.
        """
        try:
            async with self.pool.connection() as conn, AsyncExitStack() as stack:
                if pipeline:
                    await stack.enter_async_context(conn.pipeline())
                await stack.enter_async_context(conn.transaction())
                # is_local=true: the setting dies with the transaction, so a pooled or
                # PgBouncer-shared connection never carries one tenant into another's work.
                await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
                yield conn
        except PoolTimeout as exc:
            raise self.unavailable(exc) from exc
        except psycopg.OperationalError as exc:
            if not outage(exc):
                raise  # a statement the database refuses (e.g. too large for an index)
            raise UnavailableError(
                f"the database connection failed: {str(exc).strip()}",
                hint="check that PostgreSQL is running; Engram reconnects by itself",
            ) from exc

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Raise UnavailableError unless a connection answers a trivial query."""
        try:
            async with self.pool.connection(timeout=timeout_s) as conn:
                await conn.execute("SELECT 1")
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise UnavailableError(
                "the database is not reachable", hint="check that PostgreSQL is running"
            ) from exc

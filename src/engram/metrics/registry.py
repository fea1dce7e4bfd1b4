"""The Prometheus metric families Engram exports, in one registry per process.

Request and search figures are recorded as requests finish (in memory); database
figures come from the background sampler (`engram.metrics.sampler`); the pool's
figures are read from psycopg_pool when Prometheus scrapes (in memory). Serving
/metrics therefore never queries the database.

Every database gauge is the same on every API pod (they share one database): alert
rules and dashboards aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engram.config import MetricsSettings
from engram.store.stats import DbHealth

__all__ = ["LATENCY_BUCKETS", "Metrics"]

# Seconds; dense around the 100 ms search objective so histogram_quantile is precise there.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class _PoolCollector(Collector):
    """psycopg_pool's own figures, read at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, int] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._stats()
        if s is None:
            return
        size, available = s.get("pool_size", 0), s.get("pool_available", 0)
        maximum = s.get("pool_max", 0)
        figures = [
            ("engram_pool_connections", "Connections the pool holds now", size),
            ("engram_pool_connections_in_use", "Connections lent out", size - available),
            ("engram_pool_connections_max", "The pool's max_size", maximum),
            ("engram_pool_requests_waiting", "Requests waiting for a connection",
             s.get("requests_waiting", 0)),
            ("engram_pool_utilization_ratio", "Connections in use / max_size",
             (size - available) / maximum if maximum else 0.0),
        ]  # fmt: skip
        for name, doc, value in figures:
            family = GaugeMetricFamily(name, doc, labels=["pool"])
            family.add_metric(["api"], float(value))
            yield family


class Metrics:
    """Every metric object, registered in a registry of its own."""

    def __init__(self, settings: MetricsSettings | None = None) -> None:
        self.settings = settings or MetricsSettings()
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.pool_stats: Callable[[], dict[str, int] | None] = lambda: None
        pool = _PoolCollector(lambda: self.pool_stats())
        r.register(pool)
        self.requests = Histogram(
            "engram_http_request_duration_seconds",
            "HTTP request latency by route template, method and status class",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.search_latency = Histogram(
            "engram_search_duration_seconds", "Latency of successful search requests",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.searches = Counter(
            "engram_searches", "Successful search requests", ["route"], registry=r
        )
        self.searches_with_hits = Counter(
            "engram_searches_with_hits",
            "Search requests that returned at least one result (above min_score when given)",
            ["route"], registry=r,
        )  # fmt: skip
        g = self._gauge
        self.db_connections = g("engram_db_connections", "Client backends connected now")
        self.db_connections_max = g("engram_db_connections_max", "The server's max_connections")
        self.db_longest_query = g(
            "engram_db_longest_query_seconds",
            "Longest-running active query visible to Engram's role (all, with pg_monitor)",
        )
        self.db_size = g("engram_database_size_bytes", "pg_database_size of Engram's database")
        self.vector_index = g(
            "engram_vector_index_bytes", "Size of each HNSW or IVFFlat index", ["table", "index"]
        )
        self.vacuum_age = g(
            "engram_autovacuum_lag_seconds",
            "Seconds since the table was last vacuumed or autovacuumed (since server start "
            "if never)", ["table"],
        )  # fmt: skip
        self.live = g("engram_table_live_tuples", "Live rows (statistics)", ["table"])
        self.dead = g("engram_table_dead_tuples", "Dead rows awaiting vacuum", ["table"])
        self.dead_ratio = g("engram_table_dead_tuple_ratio", "Dead rows / live rows", ["table"])
        self.jobs_todo = g("engram_jobs_queue_depth", "Extraction jobs waiting to run")
        self.jobs_doing = g("engram_jobs_running", "Extraction jobs running now")
        self.jobs_oldest = g(
            "engram_jobs_oldest_age_seconds", "Age of the oldest job waiting to run (0: none)"
        )
        self.backup_last_success = g(
            "engram_backup_last_success_timestamp_seconds",
            "When the latest `engram backup` that succeeded ended (absent: none yet)",
        )
        # A running count kept in the database (never reset), exported as sampled.
        self.backup_failures = g(
            "engram_backup_failures_total", "`engram backup` runs that failed, ever"
        )
        self.sample_time = g(
            "engram_db_sample_timestamp_seconds", "When the database figures were last sampled"
        )
        self.sample_errors = Counter(
            "engram_db_sample_errors", "Database samples that failed", registry=r
        )
        # Liveness, for anyone: the process serves, its pool, whether sampling works.
        # The rest (traffic per route, tables, jobs, keys: all tenants' activity) needs
        # credentials or the separate metrics port (see engram.api.metrics).
        self.public_registry = CollectorRegistry(auto_describe=True)
        for collector in (pool, self.sample_time, self.sample_errors):
            self.public_registry.register(collector)
        self.encryption_coverage = g(
            "engram_encryption_coverage_ratio",
            "Protected fields (pii/phi/secret as configured) stored as ciphertext / protected "
            "fields; 1 when there are none",
        )
        self.encryption_coverage.set(1.0)
        self.key_rotations = Counter(
            "engram_key_rotations",
            "Key operations of this process's workers by kind (scheduled rotate, reencrypt) "
            "and outcome (ok, failed)",
            ["operation", "outcome"], registry=r,
        )  # fmt: skip
        self.reencrypt_runs = g(
            "engram_reencrypt_runs",
            "Re-encryption runs in the database by status (running, done, failed)", ["status"],
        )  # fmt: skip
        self.audit_delayed = Counter(
            "engram_audit_records_delayed",
            "Audit records not written when their request was answered (each in the server "
            "log; kept and written later, marked late)", registry=r,
        )  # fmt: skip
        self.audit_backlog = g(
            "engram_audit_backlog_records", "Delayed audit records of this process not written yet"
        )
        self.reencrypted_rows = Counter(
            "engram_reencrypted_fields", "Fields moved to a new key version", registry=r
        )
        if self.settings.database_memory_bytes:
            g("engram_database_memory_bytes", "RAM of the database server (configured)").set(
                self.settings.database_memory_bytes
            )
        if self.settings.storage_capacity_bytes:
            g("engram_database_capacity_bytes", "Storage of the database server (configured)").set(
                self.settings.storage_capacity_bytes
            )

    def _gauge(self, name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(name, doc, labels or [], registry=self.registry)

    def observe_health(self, h: DbHealth, now: float) -> None:
        """Publish one database sample."""
        self.db_connections.set(h.connections)
        self.db_connections_max.set(h.max_connections)
        self.db_longest_query.set(h.longest_query_s)
        self.db_size.set(h.database_bytes)
        _replace(self.vector_index, {k: float(v) for k, v in h.vector_indexes.items()})
        _replace(self.vacuum_age, {(t.name,): t.vacuum_age_s for t in h.tables})
        _replace(self.live, {(t.name,): float(t.live) for t in h.tables})
        _replace(self.dead, {(t.name,): float(t.dead) for t in h.tables})
        _replace(
            self.dead_ratio,
            {(t.name,): t.dead / t.live if t.live else float(t.dead > 0) for t in h.tables},
        )
        self.jobs_todo.set(h.jobs_todo)
        self.jobs_doing.set(h.jobs_doing)
        self.jobs_oldest.set(h.oldest_job_age_s)
        if h.backup_last_success is not None:
            self.backup_last_success.set(h.backup_last_success)
        self.backup_failures.set(h.backup_failures)
        self.sample_time.set(now)


def _replace(gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
    """Set a labelled gauge to exactly these series (a dropped table disappears).

    Runs on the event loop, as does the /metrics handler, so no scrape sees the gap.
    """
    gauge.clear()
    for labels, value in values.items():
        gauge.labels(*labels).set(value)

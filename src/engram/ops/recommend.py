"""From table sizes to a plan: disk, RAM, an Azure Flexible Server SKU, PostgreSQL
settings, connection pools and the matching Helm values.

The rules, each a stated assumption rather than a measurement of your traffic:

- Disk: data + indexes after growth, plus 10 % for dead tuples between autovacuum
  runs (vacuum scale factor 0.1), plus WAL headroom (twice ``max_wal_size``), kept
  below 80 % full so that the 90 % storage alert has room to warn.
- WAL: 2.5 bytes per byte written (measured 2.2 with ``wal_compression = on`` while
  ingesting LoCoMo); bytes written per day = the data divided by the retention period
  (a steady state writes what it expires), or the year's growth without retention.
- RAM: the vector indexes whole, a quarter of the other indexes and a tenth of the
  table data as the hot set, inside the 75 % of RAM PostgreSQL can use as cache;
  plus ~10 MB per connection.
- Connections: each API pod holds its pool plus the job queue's 4 and the metrics
  sampler's 1; each worker pod its pool plus 4. The total stays under 70 % of the
  server's user connections (the pool warning fires at 70 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engram.ops.sizing import TableEstimate, Workload, estimate_tables

__all__ = ["SKUS", "Deployment", "Plan", "Sku", "plan"]

GIB = 1024**3
MIB = 1024**2
WAL_FACTOR = 2.5
AZURE_RESERVED_CONNECTIONS = 15  # Azure keeps these for replication and monitoring
QUEUE_CONNECTIONS = 4  # procrastinate's connector pool (psycopg_pool min_size)
SAMPLER_CONNECTIONS = 1


@dataclass(frozen=True)
class Sku:
    name: str
    tier: str
    vcores: int
    ram_gib: int
    max_connections: int  # Azure's default for the SKU
    cost: float  # relative, for ranking only (vCores times the series' weight)

    @property
    def user_connections(self) -> int:
        return self.max_connections - AZURE_RESERVED_CONNECTIONS


def _series(prefix: str, tier: str, weight: float, rows: list[tuple[int, int, int]]) -> list[Sku]:
    return [
        Sku(f"{prefix}{v}{'s_v3' if prefix != 'B' else ''}", tier, v, ram, conns, v * weight)
        for v, ram, conns in rows
    ]


# Azure Database for PostgreSQL Flexible Server compute (default max_connections).
SKUS: list[Sku] = [
    Sku("B1ms", "Burstable", 1, 2, 50, 0.1),
    Sku("B2s", "Burstable", 2, 4, 429, 0.4),
    *_series("D", "GeneralPurpose", 1.0, [
        (2, 8, 859), (4, 16, 1718), (8, 32, 3437), (16, 64, 5000), (32, 128, 5000),
        (48, 192, 5000), (64, 256, 5000),
    ]),
    *_series("E", "MemoryOptimized", 1.3, [
        (2, 16, 1718), (4, 32, 3437), (8, 64, 5000), (16, 128, 5000), (32, 256, 5000),
        (48, 384, 5000), (64, 432, 5000),
    ]),
]  # fmt: skip
STORAGE_GIB = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32767]


@dataclass(frozen=True)
class Deployment:
    """How Engram will run: pods and their pools (the Helm chart's knobs)."""

    api_replicas: int = 3
    worker_replicas: int = 2
    pool_min: int = 2
    pool_max: int = 10
    worker_concurrency: int = 1
    retention_days: int = 0  # 0: nothing expires
    backup_retention_days: int = 7
    hnsw_ef_search: int = 400

    def connections(self, pool_max: int | None = None) -> int:
        p = self.pool_max if pool_max is None else pool_max
        api = self.api_replicas * (p + QUEUE_CONNECTIONS + SAMPLER_CONNECTIONS)
        workers = self.worker_replicas * (p + QUEUE_CONNECTIONS)
        return api + workers + 2  # migrations job and an operator's psql


@dataclass
class Plan:
    workload: Workload
    tables: list[TableEstimate]  # after growth
    data_bytes: float
    index_bytes: float
    vector_index_bytes: float
    wal_per_day_bytes: float
    wal_headroom_bytes: float
    bloat_bytes: float
    disk_bytes: float
    storage_gib: int
    backup_bytes: float
    ram_hot_bytes: float
    ram_needed_bytes: float
    sku: Sku
    pool_max: int
    connections: int
    pgbouncer: bool
    settings: dict[str, str]
    helm: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> float:
        return self.data_bytes + self.index_bytes


def _mb(n: float) -> str:
    return f"{max(1, math.ceil(n / MIB))}MB"


def _pow2_mb(n: float, low: float, high: float) -> float:
    n = min(max(n, low), high)
    return float(2 ** math.ceil(math.log2(max(n, 1) / MIB)) * MIB)


def plan(w: Workload, d: Deployment | None = None) -> Plan:
    """Size the database for the workload after growth, and configure around it."""
    d = d or Deployment()
    grown = w.grown()
    tables = estimate_tables(grown)
    data = sum(t.data_bytes for t in tables)
    index = sum(t.index_bytes for t in tables)
    vector = sum(t.vector_index_bytes for t in tables)
    total = data + index
    if d.retention_days > 0:
        per_day = total / d.retention_days
    else:
        per_day = total * (1 - 1 / w.growth_factor) / 365 if w.growth_factor > 1 else total / 365
    wal_day = per_day * WAL_FACTOR
    max_wal = _pow2_mb(wal_day / 24, 1 * GIB, 64 * GIB)  # about an hour of WAL
    wal_headroom = 2 * max_wal
    bloat = 0.1 * total
    disk = total + bloat + wal_headroom
    storage = next((g for g in STORAGE_GIB if g * GIB * 0.8 >= disk), STORAGE_GIB[-1])
    backup = total + wal_day * d.backup_retention_days
    hot = vector + 0.25 * (index - vector) + 0.1 * data
    notes: list[str] = []

    def ram_needed(connections: int) -> float:
        return hot / 0.75 + connections * 10 * MIB + 512 * MIB

    sku, pool_max, conns, bouncer = _choose(d, ram_needed, notes)
    if sku.tier == "Burstable":
        notes.append(f"{sku.name} is Burstable (CPU credits): for development and pilots; "
                     "run production on D2s_v3 or larger")  # fmt: skip
    ram = sku.ram_gib * GIB
    if storage == STORAGE_GIB[-1] and storage * GIB * 0.8 < disk:
        notes.append("more than one server's storage: distribute by tenant (Citus)")
    shared = ram * 0.25
    largest_vector = max((i.bytes for t in tables for i in t.indexes if i.vector), default=0.0)
    server_conns = conns if not bouncer else 4 * sku.vcores + 10
    settings = {
        "shared_buffers": _mb(shared),
        "effective_cache_size": _mb(ram * 0.75),
        # An HNSW build (REINDEX, `engram reembed`) is far faster when its graph fits.
        "maintenance_work_mem": _mb(_pow2_mb(largest_vector * 1.3, 256 * MIB, ram / 4)),
        "work_mem": _mb(min(max((ram - shared) / (2 * server_conns), 4 * MIB), 64 * MIB)),
        "max_connections": str(sku.max_connections),
        "max_wal_size": _mb(max_wal),
        "checkpoint_timeout": "15min",
        "wal_compression": "on",
        "random_page_cost": "1.1",
        "max_parallel_maintenance_workers": str(max(1, sku.vcores // 2)),
        "hnsw.ef_search": str(d.hnsw_ef_search),
        "azure.extensions": "VECTOR,PG_STAT_STATEMENTS",
    }
    if vector > 0.8 * ram:
        notes.append("the vector indexes exceed 80% of the largest SKU's RAM: partition")
    helm = _helm(d, w, pool_max, bouncer, sku, storage)
    return Plan(
        workload=grown, tables=tables, data_bytes=data, index_bytes=index,
        vector_index_bytes=vector, wal_per_day_bytes=wal_day, wal_headroom_bytes=wal_headroom,
        bloat_bytes=bloat, disk_bytes=disk, storage_gib=storage, backup_bytes=backup,
        ram_hot_bytes=hot, ram_needed_bytes=ram_needed(conns), sku=sku, pool_max=pool_max,
        connections=conns, pgbouncer=bouncer, settings=settings, helm=helm, notes=notes,
    )  # fmt: skip


def _choose(d: Deployment, ram_needed: Any, notes: list[str]) -> tuple[Sku, int, int, bool]:
    """The cheapest SKU with the RAM and connections, shrinking pools before growing."""
    for sku in sorted(SKUS, key=lambda s: (s.cost, s.ram_gib)):
        for pool_max in range(d.pool_max, 3, -1):
            conns = d.connections(pool_max)
            if conns <= 0.7 * sku.user_connections and ram_needed(conns) <= sku.ram_gib * GIB:
                if pool_max < d.pool_max:
                    notes.append(f"pool.max_size lowered to {pool_max} to fit {sku.name}")
                return sku, pool_max, conns, False
    # No SKU takes that many direct connections: PgBouncer multiplexes them.
    biggest = max(SKUS, key=lambda s: (s.ram_gib, s.cost))
    for sku in sorted(SKUS, key=lambda s: (s.cost, s.ram_gib)):
        if ram_needed(4 * sku.vcores + 10) <= sku.ram_gib * GIB:
            notes.append("too many pods for direct connections: enable PgBouncer")
            return sku, d.pool_max, d.connections(), True
    notes.append("no single SKU holds the hot set: partition by tenant (Citus)")
    return biggest, d.pool_max, d.connections(), True


def _helm(d: Deployment, w: Workload, pool_max: int, bouncer: bool, sku: Sku,
          storage_gib: int) -> dict[str, Any]:  # fmt: skip
    index_params: dict[str, int] = (
        {"hnsw_m": w.hnsw_m} if w.index == "hnsw" else {"ivfflat_lists": w.ivfflat_lists}
    )
    return {
        "api": {"replicas": d.api_replicas},
        "worker": {"replicas": d.worker_replicas, "concurrency": d.worker_concurrency},
        "config": {
            "pool": {"min_size": d.pool_min, "max_size": pool_max},
            "vector": {
                "index": w.index,
                **index_params,
                "hnsw_ef_search": d.hnsw_ef_search,
            },
            "metrics": {
                "database_memory_bytes": sku.ram_gib * GIB,
                "storage_capacity_bytes": storage_gib * GIB,
            },
        },
        "pgbouncer": {
            "enabled": bouncer,
            **({"defaultPoolSize": 4 * sku.vcores + 10} if bouncer else {}),
        },
    }

"""`engram size --measure`: the live database's bytes beside the model's prediction.

The prediction is made from the shape of the stored data (row counts, average message,
fact and id lengths) with the database's own vector settings, so a difference is the
model's error, not a difference in workload. Sizes are what PostgreSQL reports
(pg_relation_size of every fork, the TOAST relation, every index). Measure after
autovacuum has run (or ``VACUUM ANALYZE``): row estimates come from ANALYZE, and a GIN
index's pending list takes more room until vacuum merges it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psycopg

from engram.errors import UnavailableError
from engram.ops.sizing import TableEstimate, Workload, estimate_tables
from engram.store import stats
from engram.store.migrate import read_meta

__all__ = ["Comparison", "Measurement", "compare", "measure", "totals"]


@dataclass(frozen=True)
class Measurement:
    workload: Workload  # the stored data's shape, with the database's vector settings
    tables: dict[str, stats.RelationSize]


@dataclass(frozen=True)
class Comparison:
    table: str
    rows: float
    predicted: float
    actual: float
    predicted_index: float
    actual_index: float

    @property
    def error(self) -> float:
        """(predicted - actual) / actual; 0 when both are empty."""
        return (self.predicted - self.actual) / self.actual if self.actual else 0.0


def measure(dsn: str, tenant: str, base: Workload | None = None) -> Measurement:
    """Read sizes and the data's shape from a live Engram database."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            meta = read_meta(conn)
            if meta is None:
                raise UnavailableError(
                    "the database has no Engram schema",
                    hint="point --database-url at a migrated Engram database",
                )
            sizes = stats.relation_sizes(conn)
            shape = stats.workload_shape(conn, tenant, sizes)
    except psycopg.OperationalError as exc:
        raise UnavailableError(
            f"cannot connect to the database: {str(exc).strip()}",
            hint="check --database-url / ENGRAM_DATABASE_URL and that PostgreSQL runs",
        ) from exc
    return Measurement(_workload(shape, meta.dimensions, meta.index, meta.params, base), sizes)


def _workload(
    shape: dict[str, float], dims: int, index: str, params: dict[str, int], base: Workload | None
) -> Workload:
    sessions = max(shape["sessions"], 1.0)
    messages = shape["messages"]
    w = base or Workload(sessions=1, messages_per_session=1, avg_message_bytes=100)
    return replace(
        w,
        sessions=sessions,
        messages_per_session=messages / sessions,
        avg_message_bytes=shape["avg_message_bytes"] or w.avg_message_bytes,
        facts=shape["facts"],
        entities=shape["entities"],
        users=max(shape["users"], 1.0),
        messages_per_episode=max(1.0, messages / shape["episodes"]) if shape["episodes"] else 1.0,
        avg_fact_bytes=shape["avg_fact_bytes"] or w.avg_fact_bytes,
        embedding_dims=dims,
        vector_type="vector",
        index="ivfflat" if index == "ivfflat" else "hnsw",
        hnsw_m=int(params.get("m", w.hnsw_m)),
        ivfflat_lists=int(params.get("lists", w.ivfflat_lists)),
        id_bytes=shape["id_bytes"] or w.id_bytes,
        tenant_bytes=shape["tenant_bytes"] or w.tenant_bytes,
        growth_factor=1.0,
    )


def compare(m: Measurement) -> tuple[list[TableEstimate], list[Comparison]]:
    """Predicted and actual bytes per Engram table (and the job queue's)."""
    predicted = estimate_tables(m.workload)
    out = []
    for t in predicted:
        actual = m.tables.get(t.name)
        if actual is None:
            continue
        out.append(
            Comparison(
                t.name,
                actual.rows,
                t.total_bytes,
                float(actual.total_bytes),
                t.index_bytes,
                float(actual.index_bytes),
            )
        )
    return predicted, out


def totals(rows: list[Comparison]) -> dict[str, Any]:
    """Sum of predicted and actual bytes over the compared tables."""
    p = sum(c.predicted for c in rows)
    a = sum(c.actual for c in rows)
    return {"predicted": p, "actual": a, "error": (p - a) / a if a else 0.0}

"""What `engram size` shows: rich tables for a person, a YAML document for a file."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from engram.ops.measure import Comparison, Measurement, totals
from engram.ops.recommend import GIB, Plan
from engram.ops.sizing import Workload

__all__ = ["comparison_document", "human", "plan_document", "render_comparison", "render_plan"]


def human(n: float) -> str:
    """Bytes in binary units (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def classic_bytes(w: Workload) -> float:
    """The classic estimate: sessions x messages x size + facts x 1 KB, times growth."""
    return (w.messages * w.avg_message_bytes + w.fact_count * 1024) * w.growth_factor


def plan_document(p: Plan, inputs: Workload) -> dict[str, Any]:
    """The plan as plain data (for YAML)."""
    return {
        "inputs": {
            "sessions": inputs.sessions,
            "messages_per_session": inputs.messages_per_session,
            "avg_message_bytes": inputs.avg_message_bytes,
            "facts": round(inputs.fact_count),
            "entities": round(inputs.entity_count),
            "users": round(inputs.user_count),
            "growth_factor": inputs.growth_factor,
            "embedding_dims": inputs.embedding_dims,
            "vector_type": inputs.vector_type,
            "index": inputs.index,
            "hnsw_m": inputs.hnsw_m,
        },
        "tables": {
            t.name: {
                "rows": round(t.rows),
                "heap_bytes": round(t.heap_bytes),
                "toast_bytes": round(t.toast_bytes),
                "index_bytes": round(t.index_bytes),
                "indexes": {i.name: round(i.bytes) for i in t.indexes},
            }
            for t in p.tables
        },
        "totals": {
            "data_bytes": round(p.data_bytes),
            "index_bytes": round(p.index_bytes),
            "vector_index_bytes": round(p.vector_index_bytes),
            "total_bytes": round(p.total_bytes),
            "bloat_headroom_bytes": round(p.bloat_bytes),
            "wal_headroom_bytes": round(p.wal_headroom_bytes),
            "disk_bytes": round(p.disk_bytes),
            "wal_per_day_bytes": round(p.wal_per_day_bytes),
            "backup_bytes": round(p.backup_bytes),
            "classic_estimate_bytes": round(classic_bytes(inputs)),
        },
        "memory": {
            "vector_index_bytes": round(p.vector_index_bytes),
            "hot_set_bytes": round(p.ram_hot_bytes),
            "ram_needed_bytes": round(p.ram_needed_bytes),
        },
        "azure": {
            "sku": p.sku.name,
            "tier": p.sku.tier,
            "vcores": p.sku.vcores,
            "ram_gib": p.sku.ram_gib,
            "storage_gib": p.storage_gib,
            "max_connections": p.sku.max_connections,
        },
        "postgresql": dict(p.settings),
        "pools": {
            "api_pool_max": p.pool_max,
            "connections": p.connections,
            "pgbouncer": p.pgbouncer,
        },
        "helm_values": p.helm,
        "notes": list(p.notes),
    }


def render_plan(p: Plan, inputs: Workload, console: Console) -> None:
    tables = Table("table", "rows", "data", "indexes", "vector indexes", "total",
                   title="Storage by table (after growth)")  # fmt: skip
    for t in p.tables:
        tables.add_row(
            t.name, f"{t.rows:,.0f}", human(t.data_bytes), human(t.index_bytes),
            human(t.vector_index_bytes), human(t.total_bytes),
        )  # fmt: skip
    tables.add_row("[b]all", "", human(p.data_bytes), human(p.index_bytes),
                   human(p.vector_index_bytes), f"[b]{human(p.total_bytes)}")  # fmt: skip
    console.print(tables)
    summary = Table("", "", title="Plan", show_header=False)
    rows = [
        ("classic estimate", human(classic_bytes(inputs))),
        ("data + indexes", human(p.total_bytes)),
        ("+ dead tuples (10%) + WAL headroom", human(p.disk_bytes)),
        ("WAL written per day", human(p.wal_per_day_bytes)),
        ("backup storage (full + WAL)", human(p.backup_bytes)),
        ("RAM for the vector indexes", human(p.vector_index_bytes)),
        ("RAM needed (hot set, connections)", human(p.ram_needed_bytes)),
        ("Azure Flexible Server SKU",
         f"{p.sku.name} ({p.sku.tier}, {p.sku.vcores} vCores, {p.sku.ram_gib} GiB)"),
        ("storage", f"{p.storage_gib} GiB ({p.disk_bytes / (p.storage_gib * GIB):.0%} used)"),
        ("connections", f"{p.connections} of {p.sku.user_connections} "
                        f"(pool.max_size {p.pool_max}{', via PgBouncer' if p.pgbouncer else ''})"),
    ]  # fmt: skip
    for k, v in rows:
        summary.add_row(k, v)
    console.print(summary)
    settings = Table("setting", "value", title="PostgreSQL settings")
    for k, v in p.settings.items():
        settings.add_row(k, v)
    console.print(settings)
    for note in p.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print("Helm values: pass --output FILE for them (YAML).")


def comparison_document(m: Measurement, rows: list[Comparison]) -> dict[str, Any]:
    t = totals(rows)
    return {
        "workload": {
            "sessions": round(m.workload.sessions),
            "messages": round(m.workload.messages),
            "avg_message_bytes": round(m.workload.avg_message_bytes, 1),
            "facts": round(m.workload.fact_count),
            "entities": round(m.workload.entity_count),
            "users": round(m.workload.user_count),
            "embedding_dims": m.workload.embedding_dims,
            "index": m.workload.index,
        },
        "tables": {
            c.table: {
                "rows": round(c.rows),
                "predicted_bytes": round(c.predicted),
                "actual_bytes": round(c.actual),
                "predicted_index_bytes": round(c.predicted_index),
                "actual_index_bytes": round(c.actual_index),
                "error": round(c.error, 4),
            }
            for c in rows
        },
        "total": {
            "predicted_bytes": round(t["predicted"]),
            "actual_bytes": round(t["actual"]),
            "error": round(t["error"], 4),
        },
    }


def render_comparison(m: Measurement, rows: list[Comparison], console: Console) -> None:
    table = Table("table", "rows", "predicted", "actual", "error",
                  title="Predicted vs actual (sizes as PostgreSQL reports them)")  # fmt: skip
    for c in rows:
        table.add_row(c.table, f"{c.rows:,.0f}", human(c.predicted), human(c.actual),
                      f"{c.error:+.1%}")  # fmt: skip
    t = totals(rows)
    table.add_row("[b]all", "", human(t["predicted"]), human(t["actual"]), f"{t['error']:+.1%}")
    console.print(table)
    w = m.workload
    console.print(
        f"from {w.messages:,.0f} messages ({w.avg_message_bytes:,.0f} bytes on average) in "
        f"{w.sessions:,.0f} sessions, {w.fact_count:,.0f} facts, {w.entity_count:,.0f} "
        f"entities, {w.embedding_dims}-d {w.index}"
    )

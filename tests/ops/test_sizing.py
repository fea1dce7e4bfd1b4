"""The storage model: layouts PostgreSQL and pgvector use, and the plan built on them."""

from __future__ import annotations

import pytest

from engram.errors import ValidationError
from engram.ops import layout
from engram.ops.recommend import Deployment, plan
from engram.ops.sizing import Workload, estimate_tables


def test_hnsw_pages_hold_whole_elements() -> None:
    # Measured on PostgreSQL 18 + pgvector 0.8 (bench/size_check.py notes): 384-d vectors
    # fit four elements with their neighbours per page, 1536-d only one.
    assert layout.hnsw_bytes(3000, 384, "vector", 16) == pytest.approx(6_152_192, rel=0.02)
    assert layout.hnsw_bytes(1500, 1536, "vector", 16) == pytest.approx(12_296_192, rel=0.02)
    assert layout.hnsw_bytes(1500, 1536, "halfvec", 16) == pytest.approx(6_152_192, rel=0.02)
    assert layout.ivfflat_bytes(3000, 384, "vector", 50) == pytest.approx(5_169_152, rel=0.03)


def test_a_1536_dimension_vector_costs_a_toast_page() -> None:
    # Three full chunks and a short one leave no room for the next value's first chunk.
    assert 1500 * layout.toast_bytes([6152]) == pytest.approx(12_443_648, rel=0.02)


def test_rows_near_2kb_are_toasted_by_moving_the_vector_out() -> None:
    small = layout.store_row([layout.Column(1000, 4, True, "x"), layout.Column(900, 4, True, "e")])
    assert small.toasted == ()
    big = layout.store_row([layout.Column(1200, 4, True, "x"), layout.Column(1548, 4, True, "e")])
    assert big.toasted == (1552,)
    assert big.tuple_bytes < 1300


def test_halfvec_and_growth_change_what_they_should() -> None:
    base = Workload(sessions=10_000, messages_per_session=20, avg_message_bytes=150)
    full = {t.name: t for t in estimate_tables(base)}
    half = {
        t.name: t
        for t in estimate_tables(
            Workload(
                sessions=10_000,
                messages_per_session=20,
                avg_message_bytes=150,
                vector_type="halfvec",
            )
        )
    }
    assert half["messages"].vector_index_bytes < 0.65 * full["messages"].vector_index_bytes
    assert half["messages"].data_bytes < full["messages"].data_bytes
    grown = plan(Workload(sessions=10_000, messages_per_session=20, avg_message_bytes=150,
                          growth_factor=2.0))  # fmt: skip
    assert grown.total_bytes == pytest.approx(2 * sum(t.total_bytes for t in full.values()),
                                              rel=0.02)  # fmt: skip


def test_the_model_counts_far_more_than_the_classic_formula() -> None:
    w = Workload(sessions=1000, messages_per_session=50, avg_message_bytes=125, facts=60_000)
    total = sum(t.total_bytes for t in estimate_tables(w))
    classic = 1000 * 50 * 125 + 60_000 * 1024
    assert total > 5 * classic  # embeddings, their indexes and page overhead dominate


def test_a_memory_heavy_workload_gets_a_memory_optimised_sku() -> None:
    p = plan(Workload(sessions=200_000, messages_per_session=40, avg_message_bytes=125))
    assert p.sku.tier == "MemoryOptimized"
    assert p.vector_index_bytes <= 0.8 * p.sku.ram_gib * 1024**3
    assert p.connections <= 0.7 * p.sku.user_connections
    assert p.helm["config"]["pool"]["max_size"] == p.pool_max


def test_a_tiny_workload_fits_a_burstable_sku() -> None:
    p = plan(Workload(sessions=100, messages_per_session=10, avg_message_bytes=125),
             Deployment(api_replicas=1, worker_replicas=0))  # fmt: skip
    assert p.sku.name in ("B1ms", "B2s")
    assert p.storage_gib == 32


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sessions": -5}, "sessions"),
        ({"avg_message_bytes": 0}, "avg-message-bytes"),
        ({"facts": -1}, "facts"),
        ({"growth_factor": 0.5}, "growth-factor"),
        ({"vector_type": "float8"}, "vector-type"),
        ({"index": "diskann"}, "index"),
        ({"embedding_dims": 3072}, "embedding-dims"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"sessions": 10, "messages_per_session": 10,
                               "avg_message_bytes": 100, **kwargs}  # fmt: skip
    with pytest.raises(ValidationError) as err:
        Workload(**args)  # type: ignore[arg-type]
    assert err.value.field == field
    assert err.value.hint

"""The storage model behind `engram size`: bytes per table and index for a workload.

The classic estimate (episodic = sessions x messages x size, semantic = facts x 1 KB,
times a growth factor) misses most of what PostgreSQL stores. This model lays out each
Engram table row as PostgreSQL does (tuple header, alignment, 1- or 4-byte varlena
headers, TOAST past 2 KB, whole tuples per 8 KB page), adds every index the migrations
create (B-trees, GIN over tsvector and uuid[], HNSW or IVFFlat), the job queue's rows,
and the free-space and visibility maps. Shapes that depend on the data (message length
spread, lexemes per message, entities per fact, update churn) were measured on LoCoMo
with the local extractor (``bench/size_check.py``) and are named below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Literal

from engram.errors import ValidationError
from engram.ops import layout
from engram.ops.layout import Column

__all__ = ["IndexEstimate", "TableEstimate", "Workload", "estimate_tables"]

VectorType = Literal["vector", "halfvec"]
IndexKind = Literal["hnsw", "ivfflat"]

# Measured on LoCoMo (2,760 turns, local extractor); see bench/size_check.py.
LENGTH_SIGMA = 0.58  # spread of ln(message bytes); facts: 0.49
FACT_SIGMA = 0.49
FACTS_PER_MESSAGE = 1.37
ENTITIES_PER_FACT = 0.85
EPISODES_PER_FACT = 1.16  # messages' episodes a fact cites
MENTIONS_PER_ENTITY = 1.64  # rows of entity_mentions per entity (messages naming it)
# Entity rows are rewritten only when a new alias or label turns up.
ENTITY_HEAP_CHURN = 1.05
ENTITY_UPDATES_PER_ROW = 0.1
FACT_HEAP_CHURN = 1.05
FACT_GIN_CHURN = 2.1  # facts.episodes: a fact cited again is rewritten
# Distinct keys of the non-unique B-trees (deduplicated): the local extractor states
# most facts about a few subjects per user (the speakers).
SOURCES_PER_USER = 9.0
FACT_KEYS_PER_FACT = 0.22  # (user, source, relation) of valid facts
QUANTILES = 48  # points of the length distribution


@dataclass(frozen=True)
class Workload:
    """What the database will hold (before growth) and how it is configured."""

    sessions: float
    messages_per_session: float
    avg_message_bytes: float
    facts: float | None = None  # default: FACTS_PER_MESSAGE per message
    entities: float | None = None  # default: ENTITIES_PER_FACT per fact
    users: float | None = None  # default: one per 10 sessions
    messages_per_episode: float = 2.0  # messages per add-memory call
    avg_fact_bytes: float = 74.0
    embedding_dims: int = 384
    vector_type: VectorType = "vector"
    index: IndexKind = "hnsw"
    hnsw_m: int = 16
    ivfflat_lists: int = 100
    id_bytes: float = 36.0  # session and user ids (Zep clients often use UUID strings)
    tenant_bytes: float = 7.0  # "default"
    growth_factor: float = 1.0

    def __post_init__(self) -> None:
        checks: list[tuple[str, float | None, float]] = [
            ("sessions", self.sessions, 0),
            ("messages-per-session", self.messages_per_session, 0),
            ("avg-message-bytes", self.avg_message_bytes, 1),
            ("facts", self.facts, 0),
            ("entities", self.entities, 0),
            ("users", self.users, 1),
            ("messages-per-episode", self.messages_per_episode, 1),
            ("avg-fact-bytes", self.avg_fact_bytes, 1),
            ("embedding-dims", self.embedding_dims, 1),
            ("hnsw-m", self.hnsw_m, 2),
            ("ivfflat-lists", self.ivfflat_lists, 1),
            ("growth-factor", self.growth_factor, 1),
        ]
        for name, value, low in checks:
            if value is None:
                continue
            if not math.isfinite(value) or value < low:
                raise ValidationError(
                    f"--{name} must be a number >= {low:g}, not {value:g}",
                    field=name,
                    hint=f"pass --{name} with a value of at least {low:g}",
                )
        if self.vector_type not in ("vector", "halfvec"):
            raise ValidationError(
                f"unknown vector type {self.vector_type!r}",
                field="vector-type",
                hint="use --vector-type vector (4 bytes per dimension) or halfvec (2 bytes)",
            )
        if self.index not in ("hnsw", "ivfflat"):
            raise ValidationError(
                f"unknown index type {self.index!r}",
                field="index",
                hint="use --index hnsw or --index ivfflat",
            )
        limit = 2000 if self.vector_type == "vector" else 4000
        if self.embedding_dims > limit:
            raise ValidationError(
                f"pgvector cannot index {self.embedding_dims}-dimensional {self.vector_type} "
                f"columns (at most {limit})",
                field="embedding-dims",
                hint="use --vector-type halfvec (up to 4,000 dimensions) or a smaller model",
            )

    @property
    def messages(self) -> float:
        return self.sessions * self.messages_per_session

    @property
    def fact_count(self) -> float:
        return self.facts if self.facts is not None else self.messages * FACTS_PER_MESSAGE

    @property
    def entity_count(self) -> float:
        return self.entities if self.entities is not None else self.fact_count * ENTITIES_PER_FACT

    @property
    def user_count(self) -> float:
        return self.users if self.users is not None else max(1.0, self.sessions / 10)

    @property
    def episodes(self) -> float:
        return self.messages / self.messages_per_episode

    def grown(self) -> Workload:
        """The same workload after growth (every count times the growth factor)."""
        g = self.growth_factor
        return replace(
            self,
            sessions=self.sessions * g,
            facts=self.fact_count * g,
            entities=self.entity_count * g,
            users=self.user_count * g,
            growth_factor=1.0,
        )


@dataclass(frozen=True)
class IndexEstimate:
    name: str
    kind: str  # btree, gin, hnsw, ivfflat
    bytes: float

    @property
    def vector(self) -> bool:
        return self.kind in ("hnsw", "ivfflat")


@dataclass(frozen=True)
class TableEstimate:
    name: str
    rows: float
    heap_bytes: float  # main fork, free-space and visibility maps
    toast_bytes: float  # TOAST heap and index
    indexes: list[IndexEstimate] = field(default_factory=list)

    @property
    def data_bytes(self) -> float:
        return self.heap_bytes + self.toast_bytes

    @property
    def index_bytes(self) -> float:
        return sum(i.bytes for i in self.indexes)

    @property
    def vector_index_bytes(self) -> float:
        return sum(i.bytes for i in self.indexes if i.vector)

    @property
    def total_bytes(self) -> float:
        return self.data_bytes + self.index_bytes


# --------------------------------------------------------------------------- shapes


def _lengths(mean: float, sigma: float) -> list[float]:
    """Quantiles of a log-normal length distribution with the given mean."""
    mu = math.log(mean) - sigma * sigma / 2
    normal = NormalDist()
    return [math.exp(mu + sigma * normal.inv_cdf((i + 0.5) / QUANTILES)) for i in range(QUANTILES)]


def lexemes(text_bytes: float) -> float:
    """Distinct lexemes in a text of this many bytes (english configuration, LoCoMo fit)."""
    return float(0.127 * text_bytes**0.94)


def tsvector_bytes(text_bytes: float) -> float:
    """Payload of to_tsvector(text): entries, lexeme strings and 2-byte positions."""
    return 4 + 11 * lexemes(text_bytes) + 0.2 * text_bytes


def _text(n: float, *, prose: bool = False) -> Column:
    return Column(n, align=4, varlena=True, storage="x", compressible=prose)


_UUID = Column(16)
_TS = Column(8, align=8)


def _vector(w: Workload) -> Column:
    return Column(layout.vector_bytes(w.embedding_dims, w.vector_type) - 4, 4, True, "e")


def _uuid_array(n: float) -> Column:
    return Column(20 + 16 * n, align=4, varlena=True, storage="x")


def _vector_index(w: Workload, table: str, column: str, elements: float) -> IndexEstimate:
    name = f"{table}_{column}_idx"
    if w.index == "hnsw":
        size = layout.hnsw_bytes(elements, w.embedding_dims, w.vector_type, w.hnsw_m)
    else:
        size = layout.ivfflat_bytes(elements, w.embedding_dims, w.vector_type, w.ivfflat_lists)
    return IndexEstimate(name, w.index, size)


def _rows(cols_for: list[list[Column]], rows: float, churn: float = 1.0) -> tuple[float, float]:
    """Heap and TOAST bytes for ``rows`` rows drawn evenly from the layouts given."""
    stored = [layout.store_row(cols) for cols in cols_for]
    heap = layout.heap_bytes([s.tuple_bytes for s in stored]) * rows * churn
    toasted = [v for s in stored for v in s.toasted]
    toast_total = layout.toast_bytes(toasted) * len(toasted) / len(stored) * rows
    if toast_total:
        toast_total += layout.relation_forks_bytes(toast_total) + 2 * layout.PAGE
    return heap + layout.relation_forks_bytes(heap), toast_total


def _key(*parts: float) -> float:
    return float(layout.align(sum(parts), 1))


def _vocabulary(postings: float) -> float:
    """Distinct lexemes among ``postings`` (Heaps' law, LoCoMo fit)."""
    return 4.95 * postings**0.6 if postings > 0 else 0.0


# --------------------------------------------------------------------------- tables


def _messages(w: Workload) -> TableEstimate:
    t, ident = _text(w.tenant_bytes), _text(w.id_bytes)
    layouts = []
    postings = 0.0
    for c in _lengths(w.avg_message_bytes, LENGTH_SIGMA):
        layouts.append([
            t, _UUID, Column(8, 8), ident, ident, _text(6), _text(6.5), _text(c, prose=True),
            _text(4), Column(4, 4), _TS, _TS, _vector(w), _text(tsvector_bytes(c)), _UUID,
        ])  # fmt: skip
        postings += lexemes(c) / QUANTILES
    n = w.messages
    heap, toast = _rows(layouts, n)
    tid = 1 + w.tenant_bytes
    seq_key = layout.align(tid + 1 + w.id_bytes, 8) + 8
    return TableEstimate("messages", n, heap, toast, [
        IndexEstimate("messages_pkey", "btree", layout.btree_bytes(n, tid + 16)),
        IndexEstimate("messages_session_idx", "btree", layout.btree_bytes(n, seq_key)),
        IndexEstimate("messages_user_idx", "btree", layout.btree_bytes(n, seq_key)),
        IndexEstimate("messages_search_text_idx", "gin",
                      layout.gin_bytes(n * postings, _vocabulary(n * postings), 7)),
        _vector_index(w, "messages", "embedding", n),
    ])  # fmt: skip


def _facts(w: Workload) -> TableEstimate:
    t, ident = _text(w.tenant_bytes), _text(w.id_bytes)
    layouts = []
    postings = 0.0
    for c in _lengths(w.avg_fact_bytes, FACT_SIGMA):
        layouts.append([
            t, _UUID, ident, _UUID, _UUID, _text(8), _text(c, prose=True), Column(1),
            _vector(w), _text(tsvector_bytes(c)), _TS, Column(8, 8, null=True), _TS,
            Column(8, 8, null=True), _uuid_array(EPISODES_PER_FACT), Column(4, 4, null=True),
        ])  # fmt: skip
        postings += lexemes(c) / QUANTILES
    n = w.fact_count
    heap, toast = _rows(layouts, n, FACT_HEAP_CHURN)
    tid = 1 + w.tenant_bytes
    user_key = layout.align(tid + 1 + w.id_bytes, 1)
    return TableEstimate("facts", n, heap, toast, [
        IndexEstimate("facts_pkey", "btree", layout.btree_bytes(n, tid + 16)),
        IndexEstimate("facts_user_valid_idx", "btree", layout.btree_bytes(
            n, user_key + 16 + 1 + 8, distinct=n * FACT_KEYS_PER_FACT)),
        IndexEstimate("facts_source_idx", "btree", layout.btree_bytes(
            n, tid + 16, distinct=w.user_count * SOURCES_PER_USER)),
        IndexEstimate("facts_target_idx", "btree",
                      layout.btree_bytes(n, tid + 16, distinct=w.entity_count)),
        IndexEstimate("facts_user_idx", "btree",
                      layout.btree_bytes(n, user_key, distinct=w.user_count)),
        IndexEstimate("facts_episodes_idx", "gin", layout.gin_bytes(
            n * EPISODES_PER_FACT * FACT_GIN_CHURN, w.episodes, 16)),
        IndexEstimate("facts_search_text_idx", "gin",
                      layout.gin_bytes(n * postings, _vocabulary(n * postings), 7)),
        _vector_index(w, "facts", "fact_embedding", n),
    ])  # fmt: skip


def _entities(w: Workload) -> TableEstimate:
    t, ident = _text(w.tenant_bytes), _text(w.id_bytes)
    name = _text(13.7)
    cols = [
        t,
        _UUID,
        ident,
        name,
        name,
        _text(32),
        _text(12),
        Column(0, null=True),
        _vector(w),
        _TS,
        _TS,
    ]
    n = w.entity_count
    heap, toast = _rows([cols], n, ENTITY_HEAP_CHURN)
    tid = 1 + w.tenant_bytes
    user_key = layout.align(tid + 1 + w.id_bytes, 1)
    return TableEstimate("entities", n, heap, toast, [
        IndexEstimate("entities_pkey", "btree", layout.btree_bytes(n, tid + 16)),
        IndexEstimate("entities_tenant_id_user_id_normalized_name_key", "btree",
                      layout.btree_bytes(n, user_key + 14.7)),
        IndexEstimate("entities_user_idx", "btree",
                      layout.btree_bytes(n, user_key, distinct=w.user_count)),
        # An empty array is indexed too (one "empty" posting per row version).
        IndexEstimate("entities_aliases_idx", "gin",
                      layout.gin_bytes(n * (1 + ENTITY_UPDATES_PER_ROW), 1, 8)),
        # No vector index: names are compared within one user's rows (migration 0011).
    ])  # fmt: skip


def _entity_mentions(w: Workload) -> TableEstimate:
    """Append-only (entity, message) pairs: which messages name which entities."""
    n = w.entity_count * MENTIONS_PER_ENTITY
    heap, toast = _rows([[_text(w.tenant_bytes), _UUID, _UUID]], n)
    tid = 1 + w.tenant_bytes
    return TableEstimate("entity_mentions", n, heap, toast, [
        IndexEstimate("entity_mentions_pkey", "btree",
                      layout.btree_bytes(n, layout.align(tid, 8) + 32)),
        IndexEstimate("entity_mentions_message_idx", "btree",
                      layout.btree_bytes(n, layout.align(tid, 8) + 16)),
    ])  # fmt: skip


def _episodes(w: Workload) -> TableEstimate:
    t, ident = _text(w.tenant_bytes), _text(w.id_bytes)
    per = w.messages_per_episode
    cols = [
        t,
        _UUID,
        ident,
        ident,
        _uuid_array(per),
        _text(4),
        _text(5),
        Column(4, 4),
        Column(0, null=True),
        _text(60),
        _TS,
        _TS,
    ]
    n = w.episodes
    heap, toast = _rows([cols], n, 1.1)  # one update: pending -> done
    tid = 1 + w.tenant_bytes
    return TableEstimate("episodes", n, heap, toast, [
        IndexEstimate("episodes_pkey", "btree", layout.btree_bytes(n, tid + 16)),
        IndexEstimate("episodes_status_idx", "btree",
                      layout.btree_bytes(n, layout.align(tid + 5, 8) + 8)),
    ])  # fmt: skip


def _jobs(w: Workload) -> list[TableEstimate]:
    """procrastinate keeps one job per episode and its deferred/started/succeeded events."""
    n = w.episodes
    job = [
        Column(8, 8), _text(8), _text(22), Column(4, 4), _text(60),
        Column(0, null=True), _text(80), Column(4, 4), Column(0, null=True),
        Column(4, 4), Column(1), Column(0, null=True),
    ]  # fmt: skip
    heap, toast = _rows([job], n, 2.0)  # todo -> doing -> succeeded: two updates each
    jobs = TableEstimate("procrastinate_jobs", n, heap, toast, [
        IndexEstimate("procrastinate_jobs_pkey", "btree",
                      layout.btree_bytes(n, 8, random_order=False)),
        IndexEstimate("procrastinate_jobs_queue_name_idx_v1", "btree",
                      layout.btree_bytes(n, 9, random_order=False)),
        # Partial indexes over todo/doing jobs: a few pages however many jobs ran.
        IndexEstimate("procrastinate_jobs partial indexes", "btree", 5 * 2 * layout.PAGE),
    ])  # fmt: skip
    events = 3 * n
    ev_heap, _ = _rows([[Column(8, 8), Column(8, 8), Column(4, 4), _TS]], events)
    return [
        jobs,
        TableEstimate("procrastinate_events", events, ev_heap, 0.0, [
            IndexEstimate("procrastinate_events_pkey", "btree",
                          layout.btree_bytes(events, 8, random_order=False)),
            IndexEstimate("procrastinate_events_job_id_fkey_v1", "btree",
                          layout.btree_bytes(events, 8, random_order=False)),
        ]),
    ]  # fmt: skip


def _sessions(w: Workload) -> TableEstimate:
    t, ident = _text(w.tenant_bytes), _text(w.id_bytes)
    cols = [t, ident, Column(8, 8), _UUID, ident, _text(4), Column(0, null=True), _TS, _TS,
            Column(0, null=True)]  # fmt: skip
    n = w.sessions
    heap, toast = _rows([cols], n, 2.0)  # updated_at changes with every add-memory call
    tid = 1 + w.tenant_bytes
    id_key = layout.align(tid + 1 + w.id_bytes, 8)
    return TableEstimate("sessions", n, heap, toast, [
        IndexEstimate("sessions_pkey", "btree", layout.btree_bytes(n, tid + 1 + w.id_bytes)),
        IndexEstimate("sessions_user_idx", "btree", layout.btree_bytes(n, id_key + 8)),
        IndexEstimate("sessions_order_idx", "btree",
                      layout.btree_bytes(n, layout.align(tid, 8) + 8, random_order=False)),
    ])  # fmt: skip


def _users(w: Workload) -> TableEstimate:
    t, ident = _text(w.tenant_bytes), _text(w.id_bytes)
    null = Column(0, null=True)
    cols = [t, ident, Column(8, 8), _UUID, null, null, null, _text(4), _TS, _TS]
    n = w.user_count
    heap, toast = _rows([cols], n)
    tid = 1 + w.tenant_bytes
    return TableEstimate("users", n, heap, toast, [
        IndexEstimate("users_pkey", "btree", layout.btree_bytes(n, tid + 1 + w.id_bytes)),
        IndexEstimate("users_order_idx", "btree",
                      layout.btree_bytes(n, layout.align(tid, 8) + 8, random_order=False)),
    ])  # fmt: skip


def estimate_tables(w: Workload) -> list[TableEstimate]:
    """Bytes of every Engram table and index for this workload, largest first."""
    tables = [
        _messages(w), _facts(w), _entities(w), _entity_mentions(w), _episodes(w), *_jobs(w),
        _sessions(w), _users(w),
    ]  # fmt: skip
    return sorted(tables, key=lambda t: t.total_bytes, reverse=True)

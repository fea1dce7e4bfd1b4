"""Search latency through the API at 10k / 100k / 1M messages, and HNSW recall@10.

Loading: a pool of distinct sentences (LoCoMo turns and observations, then pairs of
their sentences) is embedded once with the real local embedder, in this process. Each
message row takes a pool sentence as its content and that sentence's vector plus small
Gaussian noise, renormalised, so that every vector is distinct. Users, sessions and
messages are COPYed straight into the tables as the superuser (binary COPY into an
unlogged staging table, then one INSERT … SELECT that computes ``search_text`` with the
same ``to_tsvector`` as the API). The vector and full-text indexes are dropped before the
load and rebuilt after it (``maintenance_work_mem = 4GB``, 2 parallel workers); the
HNSW build time and size are reported.

Measuring: ``POST /api/v2/sessions/search?limit=10`` with a LoCoMo question and a random
user, sequentially and from ``--concurrency`` clients (latency includes the query
embedding); the same for tenant-wide queries (no user_id); a breakdown (query embedding
alone, the search SQL alone); and recall@10 of the HNSW index against exact search for
tenant-wide queries at the configured ``hnsw.ef_search`` and a few others. User-scoped
search is exact by design (no recall to measure).

    .venv/bin/python bench/search.py --preset 10k
    .venv/bin/python bench/search.py --preset 100k       # target p95 <= 30 ms
    .venv/bin/python bench/search.py --preset 1m         # target p95 <= 50 ms
    .venv/bin/python bench/search.py --messages 50000 --users 500 --keep
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from common import (
    BenchServer,
    ClientPool,
    check_disk,
    cpu_delta,
    cpu_snapshot,
    default_json,
    locomo_observations,
    locomo_questions,
    locomo_sessions,
    machine,
    memory_snapshot,
    percentiles,
    pg_stat_reset,
    pg_top,
    print_machine,
    print_top,
    remove_tree,
    short_tmpdir,
    start_server,
    stop_server,
    table,
    wait_quiet,
    write_json,
)

NAME = "search"
PRESETS = {  # messages, users, target p95 (ms)
    "10k": (10_000, 100, 30.0),
    "100k": (100_000, 1_000, 30.0),
    "1m": (1_000_000, 1_000, 50.0),
}
MESSAGES_PER_SESSION = 25
COPY_CHUNK = 20_000


# --------------------------------------------------------------------------- data


def sentence_pool(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct realistic texts: LoCoMo turns and observations, then sentence pairs."""
    turns = [t["text"] for s in locomo_sessions() for t in s]
    base = list(dict.fromkeys(turns + locomo_observations()))
    if n <= len(base):
        return [base[i] for i in rng.permutation(len(base))[:n]]
    sentences = sorted(
        {s for t in base for s in re.split(r"(?<=[.!?])\s+", t) if 20 <= len(s) <= 150}
    )
    out, seen = list(base), set(base)
    for _ in range(n * 20):  # bounded: pairs of ~3,000 sentences give millions of texts
        if len(out) >= n:
            break
        i, j = rng.integers(0, len(sentences), 2)
        text = f"{sentences[i]} {sentences[j]}"
        if i != j and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def embed_all(embedder: Any, texts: list[str], batch: int = 256) -> np.ndarray:
    """Vectors of ``texts`` (float32, one row each), embedded in batches."""
    parts = [
        np.asarray(embedder.embed(texts[i : i + batch]), dtype=np.float32)
        for i in range(0, len(texts), batch)
    ]
    return np.vstack(parts)


def build_embedder() -> Any:
    from engram.config import EmbedderSettings
    from engram.embed import build_embedder as build

    return build(EmbedderSettings())


def layout(n: int, n_users: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each row's user and its session number within that user, rows interleaved by user."""
    user = rng.integers(0, n_users, n)
    order = np.argsort(user, kind="stable")
    starts = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=starts[1:])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[user[order]]
    return user, rank // MESSAGES_PER_SESSION


# --------------------------------------------------------------------------- loading


# A source of message rows: texts and unit vectors of messages lo .. hi - 1.
Rows = Callable[[int, int], tuple[list[str], np.ndarray]]


def pool_rows(
    pool_texts: list[str], pool_vecs: np.ndarray, noise: float, rng: np.random.Generator
) -> Rows:
    """Rows that each take a random pool sentence and its vector plus Gaussian noise."""

    def rows(lo: int, hi: int) -> tuple[list[str], np.ndarray]:
        pick = rng.integers(0, len(pool_texts), hi - lo)
        noisy = rng.normal(0.0, noise, (hi - lo, pool_vecs.shape[1])).astype(np.float32)
        vecs = pool_vecs[pick] + noisy
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        return [pool_texts[i] for i in pick], vecs

    return rows


def bulk_load(
    dsn: str,
    tenant: str,
    ts_config: str,
    n: int,
    n_users: int,
    rows: Rows,
    dims: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """COPY users, sessions and messages in; rebuild the indexes; return timings and sizes."""
    from engram.store.migrate import read_meta, vector_index_sql

    timings: dict[str, float] = {}
    user, sess = layout(n, n_users, rng)
    user_ids = [f"u{i:06d}" for i in range(n_users)]
    sessions_per_user = np.zeros(n_users, dtype=np.int64)
    np.maximum.at(sessions_per_user, user, sess + 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        meta = read_meta(conn)
        assert meta is not None and meta.dimensions == dims, (meta, dims)
        t = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY users (tenant_id, user_id) FROM STDIN") as copy:
                for u in user_ids:
                    copy.write_row((tenant, u))
            with cur.copy("COPY sessions (tenant_id, session_id, user_id) FROM STDIN") as copy:
                for i, u in enumerate(user_ids):
                    for s in range(int(sessions_per_user[i])):
                        copy.write_row((tenant, f"{u}-s{s:03d}", u))
        timings["users_sessions_s"] = time.perf_counter() - t

        conn.execute("DROP INDEX IF EXISTS messages_embedding_idx")
        conn.execute("DROP INDEX IF EXISTS messages_search_text_idx")
        conn.execute("DROP TABLE IF EXISTS bench_stage")
        conn.execute(
            sql.SQL(
                """CREATE UNLOGGED TABLE bench_stage (
                       uuid uuid, session_id text, user_id text, role text, role_type text,
                       content text, token_count int, created_at timestamptz,
                       embedding vector({}))"""
            ).format(sql.Literal(dims))
        )
        t = time.perf_counter()
        start = datetime(2024, 1, 1, tzinfo=UTC)
        step = timedelta(days=365) / n
        types = ["uuid", "text", "text", "text", "text", "text", "int4", "timestamptz", "vector"]
        with conn.cursor() as cur:
            for lo in range(0, n, COPY_CHUNK):
                hi = min(n, lo + COPY_CHUNK)
                texts, vecs = rows(lo, hi)
                with cur.copy("COPY bench_stage FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for k in range(hi - lo):
                        i = lo + k
                        text = texts[k]
                        u = user_ids[user[i]]
                        copy.write_row(
                            (
                                uuid.uuid4(),
                                f"{u}-s{sess[i]:03d}",
                                u,
                                "speaker",
                                ("user", "assistant")[i % 2],
                                text,
                                (len(text) + 3) // 4,
                                start + step * i,
                                vecs[k],
                            )
                        )
                print(f"  copied {hi:,}/{n:,} rows", end="\r", flush=True)
        print()
        timings["copy_stage_s"] = time.perf_counter() - t

        t = time.perf_counter()
        with conn.transaction():
            # The rows reference sessions created above; skip the per-row FK triggers.
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                """INSERT INTO messages (tenant_id, uuid, session_id, user_id, role, role_type,
                       content, token_count, created_at, updated_at, embedding, search_text,
                       metadata_sensitivity)
                   SELECT %s, uuid, session_id, user_id, role, role_type, content,
                          token_count, created_at, created_at, embedding,
                          to_tsvector(%s::regconfig, content), 0
                   FROM bench_stage""",
                (tenant, ts_config),
            )
        conn.execute("DROP TABLE bench_stage")
        timings["insert_messages_s"] = time.perf_counter() - t

        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        t = time.perf_counter()
        conn.execute("CREATE INDEX messages_search_text_idx ON messages USING gin (search_text)")
        timings["gin_index_s"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE users, sessions, messages")
        timings["vacuum_analyze_s"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute(vector_index_sql(meta, "messages", "embedding"))
        timings["hnsw_index_s"] = time.perf_counter() - t

    return {"timings_s": {k: round(v, 2) for k, v in timings.items()}, **describe(dsn)}


def describe(dsn: str) -> dict[str, Any]:
    """Rows, users, sessions, index parameters and sizes of a loaded database."""
    from engram.store.migrate import read_meta

    with psycopg.connect(dsn, autocommit=True) as conn:
        meta = read_meta(conn)
        assert meta is not None
        row = conn.execute(
            """SELECT pg_relation_size('messages_embedding_idx'),
                      pg_relation_size('messages'), pg_total_relation_size('messages'),
                      pg_relation_size(reltoastrelid), pg_database_size(current_database()),
                      (SELECT count(*) FROM messages), (SELECT count(*) FROM users),
                      (SELECT count(*) FROM sessions),
                      (SELECT reloptions FROM pg_class
                       WHERE oid = 'messages_embedding_idx'::regclass)
               FROM pg_class WHERE oid = 'messages'::regclass"""
        ).fetchone()
        assert row is not None
    return {
        "index": {"type": meta.index, **meta.params},
        "index_options": row[8],  # as built (a benchmark may have rebuilt it)
        "sizes_mb": {
            "hnsw_index": round(row[0] / 2**20, 1),
            "messages_heap": round(row[1] / 2**20, 1),
            "messages_total": round(row[2] / 2**20, 1),
            "messages_toast": round((row[3] or 0) / 2**20, 1),
            "database": round(row[4] / 2**20, 1),
        },
        "rows": int(row[5]),
        "users": int(row[6]),
        "sessions": int(row[7]),
    }


# --------------------------------------------------------------------------- measuring


ZEP_SEARCH = "/api/v2/sessions/search?limit=10"


async def api_latency(
    server: BenchServer,
    requests: list[dict[str, Any]],
    concurrency: int,
    warmup: int,
    path: str = ZEP_SEARCH,
) -> dict[str, Any]:
    """Send every search request (after ``warmup`` untimed ones) from ``concurrency`` clients."""
    latencies: list[float] = []
    counts: list[int] = []
    async with ClientPool(server.base_url, server.api_key, concurrency) as pool:
        for body in requests[:warmup]:
            await pool.clients[0].post(path, json=body)
        queue = iter(requests[warmup:])

        async def worker(client: Any) -> None:
            for body in queue:
                t0 = time.perf_counter()
                r = await client.post(path, json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"search -> {r.status_code}: {r.text[:300]}")
                counts.append(len(r.json()["results"]))

        t = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in pool.clients))
        elapsed = time.perf_counter() - t
    return {
        "queries": len(latencies),
        "concurrency": concurrency,
        "qps": round(len(latencies) / elapsed, 1),
        "latency_ms": percentiles(latencies),
        "mean_results": round(float(np.mean(counts)), 2),
    }


async def breakdown(
    server: BenchServer,
    embedder: Any,
    questions: list[str],
    users: list[str],
    n: int,
    ef_search: int,
    tenant: str,
    tenant_n: int | None = None,
) -> dict[str, Any]:
    """HTTP round trip, query embedding, and the search's SQL alone (app role, RLS).

    ``tenant_n``: how many of the queries also run tenant-wide (default all ``n``).
    """
    from engram.search.hybrid import hybrid_search
    from engram.store.db import Database
    from engram.store.embedded import EmbeddedPostgres

    http_ms = []
    async with ClientPool(server.base_url, server.api_key, 1) as pool:
        for _ in range(n):
            t = time.perf_counter()
            await pool.clients[0].get("/healthz")
            http_ms.append((time.perf_counter() - t) * 1000)
    embed_ms, vecs = [], []
    for q in questions[:n]:
        t = time.perf_counter()
        vecs.append(np.asarray(embedder.embed([q]), dtype=np.float32)[0])
        embed_ms.append((time.perf_counter() - t) * 1000)
    db = Database(
        EmbeddedPostgres(server.data_dir).dsn("engram_app", "engram"),
        min_size=1,
        max_size=2,
        timeout_s=10,
    )
    await db.open()
    try:
        out: dict[str, Any] = {
            "http_round_trip_healthz_ms": percentiles(http_ms[5:]),
            "embed_one_query_ms": percentiles(embed_ms),
        }
        # The candidate queries the API's hybrid search runs, timed one by one.
        from engram.search.hybrid import HybridQuery
        from engram.store import retrieval

        hq = HybridQuery(text="", ef_search=ef_search)
        k = hq.candidates
        for scope_label, scoped, m in (
            ("user_scoped", True, n),
            ("tenant_wide", False, n if tenant_n is None else tenant_n),
        ):
            times: dict[str, list[float]] = {"vector": [], "text": [], "hybrid_no_embed": []}
            for i, (q, v) in enumerate(zip(questions[:m], vecs[:m], strict=True)):
                scope = retrieval.Scope(user_ids=[users[i % len(users)]] if scoped else None)
                async with db.tenant(tenant) as conn:
                    await retrieval.send(conn, retrieval.search_settings(max(ef_search, k)))
                    for signal, statement in (
                        ("vector", retrieval.message_vector(v, scope, k)),
                        ("text", retrieval.message_text(q, hq.ts_config, scope, k)),
                    ):
                        t = time.perf_counter()
                        await retrieval.rows(await retrieval.send(conn, statement))
                        times[signal].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                # The query's vector given: the hybrid search without the model.
                await hybrid_search(
                    db, embedder, tenant,
                    HybridQuery(text=q, ef_search=ef_search, scope=scope, vector=v),
                )  # fmt: skip
                times["hybrid_no_embed"].append((time.perf_counter() - t) * 1000)
            for signal, values in times.items():
                out[f"{scope_label}_{signal}_ms"] = percentiles(values[5:])
    finally:
        await db.close()
    return out


def recall(dsn: str, queries: np.ndarray, ef_values: list[int], k: int = 10) -> dict[str, Any]:
    """Recall@k of the HNSW index against exact search, tenant-wide, per ef_search.

    ``recall_at_10`` counts the exact top-k ids found. Near-duplicates (several noisy
    copies of one sentence) make ties, so ``distance_recall_at_10`` also counts a result
    whose distance is within 0.1% of the exact k-th distance (as ann-benchmarks does).
    """
    q_sql = "SELECT uuid, embedding <=> %s FROM messages ORDER BY embedding <=> %s LIMIT %s"
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        plans = {}
        for mode, setting in (("hnsw", "on"), ("exact", "off")):
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL enable_indexscan = {}").format(sql.SQL(setting)))
                plan = conn.execute("EXPLAIN " + q_sql, (queries[0], queries[0], k)).fetchall()
                nodes = [r[0].split("  (cost")[0].strip(" ->") for r in plan]
                plans[mode] = " > ".join(x for x in nodes if not x.startswith(("Order", "Sort K")))
        if "messages_embedding_idx" not in plans["hnsw"] or "embedding_idx" in plans["exact"]:
            raise RuntimeError(f"unexpected plans: {plans}")
        exact, exact_ms = [], []
        for q in queries:
            t = time.perf_counter()
            with conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                rows = conn.execute(q_sql, (q, q, k)).fetchall()
                exact.append(({r[0] for r in rows}, max(float(r[1]) for r in rows)))
            exact_ms.append((time.perf_counter() - t) * 1000)
        per_ef = {}
        for ef in ef_values:
            hits, near, times = [], [], []
            for q, (truth, kth) in zip(queries, exact, strict=True):
                t = time.perf_counter()
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef)))
                    rows = conn.execute(q_sql, (q, q, k)).fetchall()
                times.append((time.perf_counter() - t) * 1000)
                hits.append(len({r[0] for r in rows} & truth) / k)
                near.append(sum(float(r[1]) <= kth * 1.001 for r in rows) / k)
            per_ef[str(ef)] = {
                "recall_at_10": round(float(np.mean(hits)), 4),
                "distance_recall_at_10": round(float(np.mean(near)), 4),
                "min_recall": round(float(np.min(hits)), 2),
                "sql_ms": percentiles(times),
            }
    return {
        "queries": len(queries),
        "plans": plans,
        "exact_sql_ms": percentiles(exact_ms),
        "per_ef_search": per_ef,
    }


# --------------------------------------------------------------------------- main


def load_data(
    args: argparse.Namespace,
    dsn: str,
    embedder: Any,
    tenant: str,
    ts_config: str,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Embed the sentence pool and bulk-load the messages; return timings and sizes."""
    t = time.perf_counter()
    pool_texts = sentence_pool(args.pool or min(args.messages, 20_000), rng)
    pool_vecs = embed_all(embedder, pool_texts)
    pool_s = time.perf_counter() - t
    print(
        f"embedded a pool of {len(pool_texts):,} sentences in {pool_s:.1f} s "
        f"({len(pool_texts) / pool_s:,.0f}/s, in-process)"
    )
    rows = pool_rows(pool_texts, pool_vecs, args.noise, rng)
    dims = pool_vecs.shape[1]
    load = bulk_load(dsn, tenant, ts_config, args.messages, args.users, rows, dims, rng)
    load["pool"] = {
        "sentences": len(pool_texts),
        "embed_s": round(pool_s, 1),
        "noise_sigma": args.noise,
    }
    return load


def run(args: argparse.Namespace, server: BenchServer) -> dict[str, Any]:
    from engram.config import load_settings

    settings = load_settings()
    tenant, ef = settings.default_tenant, args.ef_search or settings.vector.hnsw_ef_search
    rng = np.random.default_rng(args.seed)
    dsn = server.superuser_dsn()
    embedder = build_embedder()

    if args.skip_load:
        load = {"timings_s": {}, "skipped": True, **describe(dsn)}
        args.messages, args.users = load["rows"], load["users"]
    else:
        load = load_data(args, dsn, embedder, tenant, settings.text_search_config, rng)
    print(
        f"loaded {load['rows']:,} messages; timings {load['timings_s']}; sizes {load['sizes_mb']}"
    )

    questions = locomo_questions()

    users = [f"u{i:06d}" for i in range(args.users)]
    total = args.warmup + args.queries

    def bodies(scoped: bool) -> list[dict[str, Any]]:
        n = total if scoped else args.warmup + (args.tenant_queries or args.queries)
        qs = rng.choice(len(questions), n, replace=n > len(questions))
        us = rng.integers(0, len(users), n)
        return [
            {"text": questions[q], "user_id": users[u]} if scoped else {"text": questions[q]}
            for q, u in zip(qs, us, strict=True)
        ]

    api: dict[str, Any] = {}
    pg_stat_reset(dsn)
    for label, scoped, conc in (
        ("user_sequential", True, 1),
        (f"user_concurrent_{args.concurrency}", True, args.concurrency),
        ("tenant_sequential", False, 1),
        (f"tenant_concurrent_{args.concurrency}", False, args.concurrency),
    ):
        cpu0, t = cpu_snapshot(server.process.pid, server.data_dir), time.perf_counter()
        api[label] = asyncio.run(api_latency(server, bodies(scoped), conc, args.warmup))
        cpu = cpu_delta(
            cpu0, cpu_snapshot(server.process.pid, server.data_dir), time.perf_counter() - t
        )
        api[label]["cores_busy"] = cpu["cores_busy"]
        print(f"  {label}: {api[label]['latency_ms']}, cores busy {cpu['cores_busy']}")
    top = pg_top(dsn)
    mem = memory_snapshot(server.process.pid, server.data_dir)

    result = {
        "params": {
            "messages": args.messages,
            "users": args.users,
            "queries": args.queries,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "ef_search": ef,
            "tenant_queries": args.tenant_queries or args.queries,
            "breakdown_queries": args.breakdown_queries,
            "recall_queries": args.recall_queries,
            "seed": args.seed,
        },
        "load": load,
        "api": api,
        "top_statements": top,
        "memory_mb": mem,
    }
    write_json(args.json, NAME, {**result, "partial": True})  # in case a later step fails
    shuffled = [questions[i] for i in rng.permutation(len(questions))]
    try:
        result["breakdown"] = asyncio.run(
            breakdown(
                server,
                embedder,
                shuffled,
                users,
                min(args.breakdown_queries, len(shuffled)),
                ef,
                tenant,
            )
        )
    except Exception as exc:  # the figures above stand without it
        result["breakdown"] = {"error": repr(exc)}
    rq = min(args.recall_queries, len(shuffled))
    result["recall"] = recall(dsn, embed_all(embedder, shuffled[:rq]), sorted({ef, 40, 100, 200}))
    embedder.close()
    p95 = api["user_sequential"]["latency_ms"]["p95"]
    return {
        **result,
        "target_p95_ms": args.target,
        "target_met_sequential": p95 <= args.target,
        "target_met_concurrent": api[f"user_concurrent_{args.concurrency}"]["latency_ms"]["p95"]
        <= args.target,
    }


def print_breakdown(breakdown: dict[str, Any]) -> None:
    b = {k: v for k, v in breakdown.items() if isinstance(v, dict) and v}
    print()
    print(
        table(
            [[k, v["p50"], v["p95"], v["p99"]] for k, v in b.items()],
            ["in-process breakdown", "p50 ms", "p95 ms", "p99 ms"],
        )
    )


def print_recall(rec: dict[str, Any]) -> None:
    print()
    print(
        table(
            [
                [
                    ef,
                    r["recall_at_10"],
                    r.get("distance_recall_at_10", ""),
                    r["min_recall"],
                    r["sql_ms"]["p50"],
                    r["sql_ms"]["p95"],
                ]
                for ef, r in rec["per_ef_search"].items()
            ],
            [
                "hnsw.ef_search",
                "recall@10",
                "distance recall@10",
                "worst query",
                "SQL p50 ms",
                "SQL p95 ms",
            ],
        )
    )
    print(f"exact search SQL p50 {rec['exact_sql_ms']['p50']} ms over {rec['queries']} queries")


def report(result: dict[str, Any]) -> None:
    p, load = result["params"], result["load"]
    print(
        f"\nsearch: {p['messages']:,} messages, {p['users']:,} users, "
        f"{p['queries']} queries per mode after {p['warmup']} warm-up, ef_search {p['ef_search']}"
    )
    t = load["timings_s"]
    print(
        table(
            [
                [k, v]
                for k, v in {
                    **t,
                    "hnsw_index_mb": load["sizes_mb"]["hnsw_index"],
                    **{f"{k}_mb": v for k, v in load["sizes_mb"].items() if k != "hnsw_index"},
                }.items()
            ],
            ["load step", "seconds / MB"],
        )
    )
    rows = []
    for label, r in result["api"].items():
        lat = r["latency_ms"]
        rows.append(
            [
                label,
                r["queries"],
                r["qps"],
                lat["p50"],
                lat["p95"],
                lat["p99"],
                r["mean_results"],
                r["cores_busy"]["other"],
            ]
        )
    print()
    print(
        table(
            rows,
            [
                "API search (incl. embedding)",
                "n",
                "q/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "results",
                "other cores",
            ],
        )
    )
    print_breakdown(result["breakdown"])
    print_recall(result["recall"])
    print("\ntop statements during the API phase:")
    print_top(result["top_statements"])
    target = result["target_p95_ms"]
    print(
        f"\ntarget user-scoped p95 <= {target:.0f} ms: sequential "
        f"{'MET' if result['target_met_sequential'] else 'MISSED'}, concurrent "
        f"{'MET' if result['target_met_concurrent'] else 'MISSED'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="10k, 100k or 1m")
    ap.add_argument("--messages", type=int, help="messages to load (default 10,000)")
    ap.add_argument("--users", type=int, help="users to spread them over (default 100)")
    ap.add_argument("--pool", type=int, default=0, help="distinct sentences (default ≤ 20,000)")
    ap.add_argument("--noise", type=float, default=0.025, help="per-component noise sigma")
    ap.add_argument("--queries", type=int, default=500, help="timed queries per mode")
    ap.add_argument("--warmup", type=int, default=50, help="untimed queries per mode")
    ap.add_argument(
        "--tenant-queries",
        type=int,
        default=0,
        help="timed tenant-wide queries (default --queries)",
    )
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--breakdown-queries", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=0, help="default: the configured value")
    ap.add_argument("--target", type=float, help="p95 target in ms (default: from the preset)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", type=Path, help="server data dir (default: a new one in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument(
        "--skip-load",
        action="store_true",
        help="measure the data already in --data-dir (from an earlier run with --keep)",
    )
    ap.add_argument(
        "--max-wait-quiet", type=float, default=600, help="wait for an idle machine (s)"
    )
    ap.add_argument("--json", type=Path, help="result file (default bench/results/search-<N>.json)")
    args = ap.parse_args()
    n, u, target = PRESETS[args.preset or "10k"]
    args.messages = args.messages or n
    args.users = args.users or u
    args.target = args.target or target
    if not 1 <= args.messages <= 5_000_000 or not 1 <= args.users <= args.messages:
        ap.error("--messages must be in 1..5,000,000 and --users in 1..messages")
    if args.queries < 1 or args.concurrency < 1 or args.concurrency > 64:
        ap.error("--queries must be >= 1 and --concurrency in 1..64")
    if args.skip_load and not (args.data_dir and (args.data_dir / "pg").is_dir()):
        ap.error("--skip-load needs --data-dir with a loaded database")
    label = args.preset or f"{args.messages}"
    args.json = args.json or default_json(f"{NAME}-{label}")

    measure(args, NAME, run, report)


def measure(
    args: argparse.Namespace,
    name: str,
    run: Callable[[argparse.Namespace, BenchServer], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> None:
    """Start a server on ``args.data_dir`` (or a new one), run, report, write the JSON."""
    print_machine(machine())
    need = 1 + args.messages * 8e-6
    print(f"disk: {check_disk(Path('/tmp'), need):.0f} GB free in /tmp (need ~{need:.1f} GB)")
    quiet = wait_quiet(max_wait_s=args.max_wait_quiet)
    root = None if args.data_dir else short_tmpdir("egs-")
    data_dir = args.data_dir or root / "d"  # type: ignore[operator]
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(data_dir)
    print(f"server pid {server.process.pid} on {server.base_url}, data in {data_dir}")
    try:
        result = run(args, server)
    finally:
        code = stop_server(server)
        if root is not None and not args.keep:
            remove_tree(root)
    result["server_exit_code"] = code
    result["other_cores_busy_before"] = quiet
    report(result)
    path = write_json(args.json, name, result)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()

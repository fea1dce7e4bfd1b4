"""Scale: hybrid search, HNSW recall@10, index build time and size at 10k / 100k / 1M messages.

Data (bench/corpus.py): 10,000 users; every message joins 2 or 3 different parts, 15 to
40 words (mean ~27). Parts are LoCoMo sentences (turns and observations) whose names,
places, weekdays, months, numbers and a few interchangeable nouns are redrawn from
lists (up to 30 variants per sentence: ~60,000 distinct parts); every part is embedded
once with the real local embedder (cached under ``--cache-dir``). A message's vector is
the word-count-weighted sum of its parts' real embeddings plus Gaussian noise
(``--noise`` per component), renormalised (``--vectors mix``, the default), or the real
embedding of the whole message (``--vectors real``, cached, ~170 messages/s here). A
sample of messages is embedded for real to check the mix: cosine of mix to real, and
overlap of each question's exact top-10 under both.

Loading: bench/search.py's bulk load (binary COPY as the superuser, ``search_text`` by
the same ``to_tsvector``, GIN and then HNSW rebuilt with the configured m and
ef_construction, timed and sized). Messages are spread over users at random, 25 per
session, one year of timestamps.

Measuring, on the running server with its default config:

- hybrid search through the HTTP API, user-scoped, including the query embedding:
  Zep ``POST /api/v2/sessions/search?limit=10`` and native ``POST /v1/search``
  (messages and facts; the graph is empty), ``--repeats`` sequential runs each, one
  run from ``--concurrency`` clients, and a few tenant-wide queries. Queries are the
  LoCoMo questions with their names and places redrawn like the messages'. Each run
  records the load average and the CPU that the server, PostgreSQL, this process and
  everything else used (the machine is shared);
- the in-process breakdown of bench/search.py (embedding, each candidate query);
- recall@10 of the HNSW index against exact search, tenant-wide, at the configured
  ``hnsw.ef_search`` and others.

    .venv/bin/python bench/scale.py --preset 10k
    .venv/bin/python bench/scale.py --preset 1m --data-dir /tmp/s1m/d --keep
    .venv/bin/python bench/scale.py --preset 1m --data-dir /tmp/s1m/d --skip-load
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import (
    BenchServer,
    cpu_delta,
    cpu_snapshot,
    default_json,
    locomo_questions,
    memory_snapshot,
    percentiles,
    pg_stat_reset,
    pg_top,
    postgres_pids,
    print_top,
    table,
    write_json,
)
from corpus import Corpus, build_parts, describe_parts, embed_cached, fill, templates
from search import (
    ZEP_SEARCH,
    Rows,
    api_latency,
    breakdown,
    build_embedder,
    bulk_load,
    describe,
    measure,
    print_breakdown,
    print_recall,
    recall,
)

NAME = "scale"
PRESETS = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
USERS = 10_000
TARGET_P95_MS, TARGET_RECALL = 50.0, 0.95
NATIVE_SEARCH = "/v1/search"


# --------------------------------------------------------------------------- data


def part_vectors(corpus: Corpus, embedder: Any, cache: Path) -> np.ndarray:
    """Real embeddings of every part, from the cache or computed into it."""
    path = cache / f"parts-{corpus.key(embedder.id)}.f32"
    parts = corpus.parts
    return embed_cached(
        path, len(parts), lambda lo, hi: parts[lo:hi], embedder.embed, embedder.dimensions
    )


def message_rows(
    args: argparse.Namespace, corpus: Corpus, part_vecs: np.ndarray, embedder: Any
) -> Rows:
    """Texts and vectors of messages lo .. hi - 1, the same on every run with this seed."""
    real = None
    if args.vectors == "real":
        path = args.cache_dir / f"messages-{corpus.key(embedder.id)}.f32"
        real = embed_cached(
            path,
            args.messages,
            lambda lo, hi: corpus.texts(corpus.rows(lo, hi)),
            embedder.embed,
            embedder.dimensions,
        )

    def rows(lo: int, hi: int) -> tuple[list[str], np.ndarray]:
        r = corpus.rows(lo, hi)
        if real is not None:
            return corpus.texts(r), np.ascontiguousarray(real[lo:hi])
        rng = np.random.default_rng([args.seed, 0x5EED, lo])
        return corpus.texts(r), corpus.mix(r, part_vecs, args.noise, rng)

    return rows


def check_mix(
    corpus: Corpus,
    part_vecs: np.ndarray,
    embedder: Any,
    noise: float,
    questions: np.ndarray,
    n: int,
) -> dict[str, Any]:
    """How close the mixed vectors are to real embeddings of the same messages.

    ``cosine``: of each message's mix to its real embedding. ``top10_overlap``: for each
    question, the share of its exact top-10 among the ``n`` messages under the real
    embeddings that is also top-10 under the mix.
    """
    r = corpus.rows(0, n)
    t = time.perf_counter()
    real = np.vstack([embedder.embed(corpus.texts(r[i : i + 500])) for i in range(0, n, 500)])
    embed_s = time.perf_counter() - t
    out: dict[str, Any] = {"messages": n, "questions": len(questions)}
    for label, sigma in (("no_noise", 0.0), ("with_noise", noise)):
        mix = corpus.mix(r, part_vecs, sigma, np.random.default_rng(1))
        cos = np.einsum("nd,nd->n", mix, real)
        top_real = np.argsort(-(questions @ real.T), axis=1)[:, :10]
        top_mix = np.argsort(-(questions @ mix.T), axis=1)[:, :10]
        overlap = [len(set(a) & set(b)) / 10 for a, b in zip(top_real, top_mix, strict=True)]
        out[label] = {
            "noise_sigma": sigma,
            "cosine_mean": round(float(cos.mean()), 4),
            "cosine_p5": round(float(np.percentile(cos, 5)), 4),
            "top10_overlap": round(float(np.mean(overlap)), 4),
        }
    out["real_embed_per_s"] = round(n / embed_s, 1)
    return out


def questions(seed: int) -> list[str]:
    """The LoCoMo questions, names and places redrawn as in the messages (one each)."""
    rng = np.random.default_rng([seed, 0x9E5])
    return [fill(pieces, kinds, rng) for pieces, kinds in templates(locomo_questions())]


# --------------------------------------------------------------------------- measuring


def rebuild_hnsw(dsn: str, m: int, ef_construction: int) -> float:
    """Drop and rebuild the messages' HNSW index with other parameters; return seconds."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '4GB'")  # as bulk_load: the graph fits
        conn.execute("SET max_parallel_maintenance_workers = 2")
        conn.execute("DROP INDEX IF EXISTS messages_embedding_idx")
        t = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX messages_embedding_idx ON messages USING hnsw "
                "(embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})"
            ).format(sql.Literal(m), sql.Literal(ef_construction))
        )
        return time.perf_counter() - t


def renice(server: BenchServer, nice: int) -> list[int]:
    """Set the nice value of every thread of the server, PostgreSQL and this process.

    Backends forked later inherit the postmaster's value; threads started later, their
    creator's. Negative values approximate a machine of one's own: other people's work
    then waits for ours.
    """
    pids = [os.getpid(), server.process.pid, *postgres_pids(server.data_dir)]
    done = []
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
                done.append(int(task.name))
    return done


def timed_run(
    server: BenchServer,
    bodies: list[dict[str, Any]],
    concurrency: int,
    warmup: int,
    path: str,
) -> dict[str, Any]:
    """One latency run with its load average and CPU accounting."""
    load0 = [round(x, 2) for x in os.getloadavg()]
    cpu0, t = cpu_snapshot(server.process.pid, server.data_dir), time.perf_counter()
    result = asyncio.run(api_latency(server, bodies, concurrency, warmup, path))
    cpu = cpu_delta(
        cpu0, cpu_snapshot(server.process.pid, server.data_dir), time.perf_counter() - t
    )
    return {
        **result,
        "path": path,
        "cores_busy": cpu["cores_busy"],
        "cpu_s": cpu["cpu_s"],
        # warm-up included: CPU a request costs, whatever the machine's load
        "cpu_ms_per_request": {
            k: round(cpu["cpu_s"][k] * 1000 / len(bodies), 2)
            for k in ("server", "postgres", "bench_client")
        },
        "loadavg_before": load0,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def measure_api(
    server: BenchServer, args: argparse.Namespace, qs: list[str], rng: np.random.Generator
) -> dict[str, Any]:
    users = [f"u{i:06d}" for i in range(USERS)]

    def bodies(n: int, scoped: bool, native: bool) -> list[dict[str, Any]]:
        picks = rng.integers(0, len(qs), n)
        who = rng.integers(0, len(users), n)
        out = []
        for q, u in zip(picks, who, strict=True):
            body: dict[str, Any] = {"text": qs[q]}
            if scoped:
                body["user_id"] = users[u]
            if native:
                body["limit"] = 10
            out.append(body)
        return out

    n = args.warmup + args.queries
    plan: list[tuple[str, str, bool, int, int]] = []  # label, path, scoped, clients, n
    for i in range(1, args.repeats + 1):
        plan.append((f"zep_user_seq_{i}", ZEP_SEARCH, True, 1, n))
        plan.append((f"native_user_seq_{i}", NATIVE_SEARCH, True, 1, n))
    plan.append((f"zep_user_conc{args.concurrency}", ZEP_SEARCH, True, args.concurrency, n))
    if args.tenant_queries:
        plan.append(
            ("zep_tenant_seq", ZEP_SEARCH, False, 1, args.warmup // 5 + args.tenant_queries)
        )
    runs: dict[str, Any] = {}
    for label, path, scoped, clients, count in plan:
        warm = args.warmup if scoped else args.warmup // 5
        runs[label] = timed_run(
            server, bodies(count, scoped, path == NATIVE_SEARCH), clients, warm, path
        )
        r = runs[label]
        print(
            f"  {label}: {r['latency_ms']}, load {r['loadavg_before'][0]}, "
            f"cores busy {r['cores_busy']}"
        )
    return runs


def summary(runs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Median over the repeated sequential runs of each percentile, and their range."""
    picked = [r for k, r in runs.items() if k.startswith(prefix)]
    out: dict[str, Any] = {"runs": len(picked)}
    for q in ("p50", "p95", "p99"):
        values = [r["latency_ms"][q] for r in picked]
        out[q] = round(float(np.median(values)), 2)
        out[f"{q}_range"] = [min(values), max(values)]
    out["loadavg_1m"] = [r["loadavg_before"][0] for r in picked]
    out["other_cores_busy"] = [r["cores_busy"]["other"] for r in picked]
    out["server_cpu_ms_per_request"] = [r["cpu_ms_per_request"]["server"] for r in picked]
    out["postgres_cpu_ms_per_request"] = [r["cpu_ms_per_request"]["postgres"] for r in picked]
    return out


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace, server: BenchServer) -> dict[str, Any]:
    from engram.config import load_settings

    settings = load_settings()
    tenant, ef = settings.default_tenant, settings.vector.hnsw_ef_search
    dsn = server.superuser_dsn()
    embedder = build_embedder()
    t = time.perf_counter()
    parts = build_parts(args.variants, args.seed)
    corpus = Corpus(parts, args.seed)
    part_vecs = part_vectors(corpus, embedder, args.cache_dir)
    data: dict[str, Any] = {
        **describe_parts(parts, args.variants),
        "vectors": args.vectors,
        "noise_sigma": args.noise if args.vectors == "mix" else None,
        "parts_s": round(time.perf_counter() - t, 1),
    }
    qs = questions(args.seed)
    rng = np.random.default_rng(args.seed)
    shuffled = [qs[i] for i in rng.permutation(len(qs))]
    q_vecs = np.asarray(embedder.embed(shuffled[: max(args.recall_queries, 20)]), dtype=np.float32)
    if args.check_mix:
        data["mix_check"] = check_mix(
            corpus, part_vecs, embedder, args.noise, q_vecs, args.check_mix
        )
        print(f"mix vs real embeddings: {data['mix_check']}")
    # The load's timings live beside the data dir, for later runs with --skip-load.
    sidecar = server.data_dir.parent / "scale-load.json"
    if args.skip_load:
        earlier = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        load: dict[str, Any] = {
            "timings_s": earlier.get("timings_s", {}),
            "skipped": True,
            "loaded_at": earlier.get("loaded_at"),
            "loadavg_during_load": earlier.get("loadavg_after"),
            **describe(dsn),
        }
        args.messages = load["rows"]
        if args.rebuild:
            print(f"rebuilding the HNSW index with m, ef_construction = {args.rebuild}")
            load["timings_s"] = {"hnsw_index_s": round(rebuild_hnsw(dsn, *args.rebuild), 2)}
            load["rebuilt"] = {"m": args.rebuild[0], "ef_construction": args.rebuild[1]}
            load.update(describe(dsn))
            load["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    else:
        rows = message_rows(args, corpus, part_vecs, embedder)
        load = bulk_load(
            dsn, tenant, settings.text_search_config, args.messages, USERS, rows,
            part_vecs.shape[1], rng,
        )  # fmt: skip
        load["loaded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        load["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        sidecar.write_text(json.dumps(load, indent=2))
    print(
        f"loaded {load['rows']:,} messages; timings {load['timings_s']}; sizes {load['sizes_mb']}"
    )
    texts = corpus.texts(corpus.rows(0, min(args.messages, 20_000)))
    data["message_words"] = percentiles([len(x.split()) for x in texts], (5, 50, 95))
    result: dict[str, Any] = {
        "params": {
            "messages": args.messages, "users": USERS, "queries": args.queries,
            "warmup": args.warmup, "repeats": args.repeats, "concurrency": args.concurrency,
            "tenant_queries": args.tenant_queries, "ef_search": ef, "seed": args.seed,
        },
        "data": data,
        "load": load,
    }  # fmt: skip
    if args.nice:
        result["params"]["nice"] = args.nice
        result["params"]["reniced_threads"] = len(renice(server, args.nice))
    pg_stat_reset(dsn)
    result["api"] = measure_api(server, args, qs, rng)
    result["top_statements"] = pg_top(dsn)
    result["memory_mb"] = memory_snapshot(server.process.pid, server.data_dir)
    write_json(args.json, NAME, {**result, "partial": True})
    try:
        result["breakdown"] = asyncio.run(
            breakdown(
                server, embedder, shuffled, [f"u{i:06d}" for i in range(USERS)],
                args.breakdown_queries, ef, tenant, args.tenant_queries,
            )
        )  # fmt: skip
    except Exception as exc:  # the figures above stand without it
        result["breakdown"] = {"error": repr(exc)}
    load0 = [round(x, 2) for x in os.getloadavg()]
    if args.recall_queries:
        efs = sorted({ef, 40, 64, 100, 200, *args.ef_values})
        result["recall"] = recall(dsn, q_vecs[: args.recall_queries], efs)
        result["recall"]["loadavg_before"] = load0
    embedder.close()
    zep = summary(result["api"], "zep_user_seq_")
    at_ef = result["recall"]["per_ef_search"][str(ef)]["recall_at_10"] if "recall" in result else 0
    result["summary"] = {
        "zep_user_seq": zep,
        "native_user_seq": summary(result["api"], "native_user_seq_"),
        "recall_at_10": at_ef,
        "ef_search": ef,
        "hnsw_build_s": load["timings_s"].get("hnsw_index_s"),
        "hnsw_index_mb": load["sizes_mb"]["hnsw_index"],
        "target_p95_met": zep["p95"] <= TARGET_P95_MS,
        "target_recall_met": at_ef >= TARGET_RECALL,
    }
    return result


def report(result: dict[str, Any]) -> None:
    p, s = result["params"], result["summary"]
    print(
        f"\nscale: {p['messages']:,} messages, {p['users']:,} users, {p['queries']} queries "
        f"per run after {p['warmup']} warm-up, ef_search {p['ef_search']}"
    )
    rows = []
    for label, r in result["api"].items():
        lat = r["latency_ms"]
        rows.append(
            [label, r["queries"], r["qps"], lat["p50"], lat["p95"], lat["p99"],
             r["mean_results"], r["loadavg_before"][0], r["cores_busy"]["other"]]
        )  # fmt: skip
    print(
        table(
            rows,
            ["API search (incl. embedding)", "n", "q/s", "p50 ms", "p95 ms", "p99 ms",
             "results", "load 1m", "other cores"],
        )
    )  # fmt: skip
    print_breakdown(result["breakdown"])
    if "recall" in result:
        print_recall(result["recall"])
    print("\ntop statements during the API phase:")
    print_top(result["top_statements"])
    zep = s["zep_user_seq"]
    print(
        f"\nuser-scoped Zep search, median of {zep['runs']} runs: p50 {zep['p50']} / p95 "
        f"{zep['p95']} / p99 {zep['p99']} ms (goal p95 <= {TARGET_P95_MS:.0f}: "
        f"{'MET' if s['target_p95_met'] else 'MISSED'}); recall@10 at ef_search "
        f"{s['ef_search']}: {s['recall_at_10']} (goal >= {TARGET_RECALL}: "
        f"{'MET' if s['target_recall_met'] else 'MISSED'}); HNSW build {s['hnsw_build_s']} s, "
        f"{s['hnsw_index_mb']} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="10k")
    ap.add_argument("--messages", type=int, help="messages to load (default: the preset's)")
    ap.add_argument("--vectors", choices=["mix", "real"], default="mix")
    ap.add_argument("--noise", type=float, default=0.01, help="mix: noise sigma per component")
    ap.add_argument("--variants", type=int, default=30, help="filled variants per template")
    ap.add_argument("--check-mix", type=int, default=3000, help="messages embedded for real")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/engram-scale-cache"))
    ap.add_argument("--queries", type=int, default=500, help="timed queries per run")
    ap.add_argument("--warmup", type=int, default=50, help="untimed queries per run")
    ap.add_argument("--repeats", type=int, default=3, help="sequential runs per API")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--tenant-queries", type=int, default=20)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--breakdown-queries", type=int, default=100)
    ap.add_argument("--ef-values", type=int, nargs="*", default=[], help="more ef_search")
    ap.add_argument(
        "--nice", type=int, default=0, help="run the server and PostgreSQL at this nice value"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", type=Path, help="server data dir (default: a new one in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--skip-load", action="store_true", help="measure --data-dir as loaded")
    ap.add_argument(
        "--rebuild",
        type=int,
        nargs=2,
        metavar=("M", "EF_CONSTRUCTION"),
        help="with --skip-load: first rebuild the HNSW index with these parameters",
    )
    ap.add_argument("--max-wait-quiet", type=float, default=60, help="wait for an idle machine")
    ap.add_argument("--json", type=Path, help="result file (default bench/results/scale-<N>.json)")
    args = ap.parse_args()
    args.messages = args.messages or PRESETS[args.preset]
    if not USERS <= args.messages <= 5_000_000:
        ap.error(f"--messages must be in {USERS:,}..5,000,000")
    if args.skip_load and not (args.data_dir and (args.data_dir / "pg").is_dir()):
        ap.error("--skip-load needs --data-dir with a loaded database")
    label = args.preset if args.messages == PRESETS[args.preset] else str(args.messages)
    args.json = args.json or default_json(f"{NAME}-{label}")

    measure(args, NAME, run, report)


if __name__ == "__main__":
    main()

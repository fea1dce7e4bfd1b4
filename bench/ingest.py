"""Ingestion throughput through the real API with the local embedder.

Many users and sessions receive LoCoMo turns (~125 characters) in batches of
``--batch`` messages per ``POST /api/v2/sessions/{id}/memory``, from ``--concurrency``
concurrent clients, until ``--messages`` messages are stored. Reports messages/s,
request latency percentiles, the server's RSS and the PostgreSQL processes' memory.

    .venv/bin/python bench/ingest.py                      # 5,000 messages, 4 clients
    .venv/bin/python bench/ingest.py --messages 20000 --json bench/results/ingest-20k.json

Target: >= 300 messages/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import time
from pathlib import Path
from typing import Any

import psycopg

from common import (
    BenchServer,
    ClientPool,
    MemorySampler,
    cpu_delta,
    cpu_snapshot,
    create_users_sessions,
    default_json,
    job_counts,
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
    timed,
    wait_quiet,
    write_json,
)

NAME = "ingest"
TARGET_MSGS_PER_S = 300.0


def plan(n_messages: int, n_sessions: int, batch: int) -> list[tuple[int, list[dict[str, Any]]]]:
    """The POSTs to send, as (session index, messages), interleaved across sessions.

    Session k replays LoCoMo sessions from number k on, so each conversation reads in
    order; batch j of every session is sent before batch j+1 of any, so that no two
    concurrent requests write to the same session.
    """
    convs = locomo_sessions()
    per_session = [
        n_messages // n_sessions + (k < n_messages % n_sessions) for k in range(n_sessions)
    ]
    batches: list[list[tuple[int, list[dict[str, Any]]]]] = []
    for k, count in enumerate(per_session):
        turns = itertools.islice(
            itertools.chain.from_iterable(convs[(k + i) % len(convs)] for i in range(len(convs))),
            count,
        )
        speakers: dict[str, str] = {}
        msgs = []
        for t in turns:
            role_type = speakers.setdefault(t["speaker"], ("user", "assistant")[len(speakers) % 2])
            msgs.append({"role": t["speaker"], "role_type": role_type, "content": t["text"]})
        batches.append([(k, msgs[i : i + batch]) for i in range(0, len(msgs), batch)])
    return [b for group in itertools.zip_longest(*batches) for b in group if b is not None]


async def run(args: argparse.Namespace, server: BenchServer) -> dict[str, Any]:
    run_id = secrets.token_hex(3)
    n_sessions = args.sessions or max(1, args.messages // 50)
    n_users = args.users or max(1, n_sessions // 4)
    users = [f"ing-{run_id}-u{i:05d}" for i in range(n_users)]
    sessions = [(f"ing-{run_id}-s{k:05d}", users[k % n_users]) for k in range(n_sessions)]
    posts = plan(args.messages, n_sessions, args.batch)

    async with ClientPool(server.base_url, server.api_key, args.concurrency) as pool:
        t0 = time.perf_counter()
        await create_users_sessions(pool.clients[0], users, sessions)
        setup_s = time.perf_counter() - t0

        # Warm-up on a session of its own: the first requests pay for lazy start-up work.
        warm_user, warm_session = f"ing-{run_id}-warm", f"ing-{run_id}-warm-s"
        await create_users_sessions(pool.clients[0], [warm_user], [(warm_session, warm_user)])
        warm = [m for _, b in posts[: args.warmup] for m in b]
        for i in range(0, len(warm), args.batch):
            await timed(
                pool.clients[0],
                "POST",
                f"/api/v2/sessions/{warm_session}/memory",
                json={"messages": warm[i : i + args.batch]},
            )

        pg_stat_reset(server.superuser_dsn())
        sampler = MemorySampler(server.process.pid, server.data_dir)
        sampler.start()
        latencies: list[float] = []
        queue = iter(posts)

        async def worker(client: Any) -> None:
            for k, msgs in queue:  # one shared iterator: each POST is sent exactly once
                ms = await timed(
                    client,
                    "POST",
                    f"/api/v2/sessions/{sessions[k][0]}/memory",
                    json={"messages": msgs},
                )
                latencies.append(ms)

        cpu0 = cpu_snapshot(server.process.pid, server.data_dir)
        t1 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in pool.clients))
        elapsed = time.perf_counter() - t1
        cpu = cpu_delta(cpu0, cpu_snapshot(server.process.pid, server.data_dir), elapsed)
        peak = await sampler.stop()

    jobs_end = job_counts(server.superuser_dsn())
    drain_s = None
    if args.drain_timeout > 0 and jobs_end:
        t2 = time.perf_counter()
        while time.perf_counter() - t2 < args.drain_timeout:
            counts = job_counts(server.superuser_dsn())
            if not counts.get("todo") and not counts.get("doing"):
                drain_s = round(time.perf_counter() - t2, 1)
                break
            await asyncio.sleep(1)
    stored = count_stored(server, [s for s, _ in sessions])
    total = sum(len(b) for _, b in posts)
    if stored != total:
        raise RuntimeError(f"sent {total} messages but {stored} are stored")
    end = memory_snapshot(server.process.pid, server.data_dir)
    return {
        "params": {
            "messages": total,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "users": n_users,
            "sessions": n_sessions,
            "requests": len(posts),
            "warmup_requests": args.warmup,
            "mean_chars": round(sum(len(m["content"]) for _, b in posts for m in b) / total, 1),
        },
        "setup_s": round(setup_s, 2),
        "elapsed_s": round(elapsed, 2),
        "messages_per_s": round(total / elapsed, 1),
        "requests_per_s": round(len(posts) / elapsed, 2),
        "latency_ms": percentiles(latencies),
        "memory_end_mb": end,
        "memory_peak_mb": peak,
        "cpu": cpu,
        "worker_in_process": not args.no_worker,
        "jobs_at_end_of_timed_phase": jobs_end,
        "jobs_drain_s": drain_s,
        "jobs_after_drain": job_counts(server.superuser_dsn()),
        "top_statements": pg_top(server.superuser_dsn()),
        "target_messages_per_s": TARGET_MSGS_PER_S,
        "target_met": total / elapsed >= TARGET_MSGS_PER_S,
    }


def count_stored(server: BenchServer, session_ids: list[str]) -> int:
    with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM messages WHERE session_id = ANY(%s)", (session_ids,)
        ).fetchone()
    return int(row[0]) if row else 0


def report(result: dict[str, Any]) -> None:
    p, lat = result["params"], result["latency_ms"]
    print(
        f"\ningest: {p['messages']:,} messages ({p['mean_chars']} chars avg) in batches of "
        f"{p['batch']}, {p['concurrency']} clients, {p['users']} users, {p['sessions']} sessions"
    )
    rows = [
        [
            "throughput",
            f"{result['messages_per_s']:,.1f} messages/s",
            f"target >= {TARGET_MSGS_PER_S:.0f}: {'MET' if result['target_met'] else 'MISSED'}",
        ],
        ["requests", f"{result['requests_per_s']:,.2f} req/s", f"{p['requests']} POSTs"],
        ["elapsed", f"{result['elapsed_s']:.2f} s", f"setup {result['setup_s']:.2f} s"],
        [
            "latency p50 / p95 / p99",
            f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ms",
            f"max {lat['max']:.1f} ms",
        ],
        [
            "server RSS end / peak",
            f"{result['memory_end_mb']['server_rss_mb']:.0f} / "
            f"{result['memory_peak_mb'].get('server_rss_mb', 0):.0f} MB",
            "VmRSS",
        ],
        [
            "postgres RSS sum end / peak",
            f"{result['memory_end_mb']['postgres_rss_sum_mb']:.0f} / "
            f"{result['memory_peak_mb'].get('postgres_rss_sum_mb', 0):.0f} MB",
            "counts shared_buffers once per process",
        ],
        [
            "postgres PSS sum end / peak",
            f"{result['memory_end_mb']['postgres_pss_sum_mb']:.0f} / "
            f"{result['memory_peak_mb'].get('postgres_pss_sum_mb', 0):.0f} MB",
            f"{result['memory_end_mb']['postgres_processes']} processes",
        ],
    ]
    print(table(rows, ["figure", "value", "note"]))
    print(
        f"extraction worker in-process: {result['worker_in_process']}; jobs at the end of the "
        f"timed phase {result['jobs_at_end_of_timed_phase']}; drained in "
        f"{result['jobs_drain_s']} s; after: {result['jobs_after_drain']}"
    )
    busy = result["cpu"]["cores_busy"]
    print(
        f"CPU during the timed phase (cores busy of {machine()['cores']}): server "
        f"{busy['server']}, postgres {busy['postgres']}, bench client {busy['bench_client']}, "
        f"other processes {busy['other']}"
    )
    print("\ntop statements (database time during the timed phase):")
    print_top(result["top_statements"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=5_000, help="messages to ingest (default 5000)")
    ap.add_argument("--batch", type=int, default=10, help="messages per POST (default 10)")
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent clients (default 4)")
    ap.add_argument("--users", type=int, default=0, help="default: sessions / 4")
    ap.add_argument("--sessions", type=int, default=0, help="default: messages / 50")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up POSTs (default 5)")
    ap.add_argument("--data-dir", type=Path, help="server data dir (default: a new one in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument(
        "--no-worker", action="store_true", help="serve without the in-process extraction worker"
    )
    ap.add_argument(
        "--drain-timeout", type=float, default=0, help="then wait for the job queue to empty (s)"
    )
    ap.add_argument(
        "--max-wait-quiet", type=float, default=600, help="wait for an idle machine (s)"
    )
    ap.add_argument("--json", type=Path, default=default_json(NAME), help="result file")
    args = ap.parse_args()
    if not 1 <= args.messages <= 2_000_000 or not 1 <= args.concurrency <= 64:
        ap.error("--messages must be in 1..2,000,000 and --concurrency in 1..64")

    info = machine()
    print_machine(info)
    quiet = wait_quiet(max_wait_s=args.max_wait_quiet)
    root = None if args.data_dir else short_tmpdir("egb-")
    data_dir = args.data_dir or root / "d"  # type: ignore[operator]
    server = start_server(data_dir, extra=["--no-worker"] if args.no_worker else None)
    print(f"server pid {server.process.pid} on {server.base_url}, data in {data_dir}")
    try:
        result = asyncio.run(run(args, server))
    finally:
        code = stop_server(server)
        if root is not None and not args.keep:
            remove_tree(root)
    result["server_exit_code"] = code
    result["other_cores_busy_before"] = quiet
    report(result)
    path = write_json(args.json, NAME, result)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()

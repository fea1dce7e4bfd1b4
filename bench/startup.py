"""Start-up time and memory of `engram serve` with the embedded PostgreSQL.

Times ``engram serve`` from process start to ``/readyz`` = 200: a first start on a fresh
data dir (initdb, roles, migrations, model load) and later starts on the same dir. The
server's log lines are stamped as they appear, which shows where the time goes. Reports
the server process RSS after start and after a short ingest and search, and the
PostgreSQL processes' memory.

    .venv/bin/python bench/startup.py
    .venv/bin/python bench/startup.py --later-starts 5 --ingest 2000

Targets: first start <= 20 s, later start <= 8 s, server RSS <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    BenchServer,
    ClientPool,
    MemorySampler,
    create_users_sessions,
    default_json,
    launch,
    locomo_questions,
    locomo_sessions,
    machine,
    memory_snapshot,
    print_machine,
    remove_tree,
    short_tmpdir,
    stop_server,
    system_busy_s,
    table,
    timed,
    wait_quiet,
    write_json,
)

NAME = "startup"
LIVE: list[BenchServer] = []  # servers to stop if the run fails half-way
TARGET_FIRST_S, TARGET_LATER_S, TARGET_RSS_MB = 20.0, 8.0, 1536.0


def start_timed(data_dir: Path, api_key: str, timeout_s: float = 300) -> dict[str, Any]:
    """Launch the server and wait for /readyz = 200, stamping each new log line on arrival."""
    log = data_dir.with_suffix(".log")
    offset = log.stat().st_size if log.exists() else 0
    t0, busy0 = time.perf_counter(), system_busy_s()
    server = launch(data_dir, api_key)
    LIVE.append(server)
    timeline: list[tuple[float, str]] = []
    ready_s = None
    with httpx.Client(timeout=2) as client:
        while time.perf_counter() - t0 < timeout_s:
            if log.exists():
                with log.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                # only complete lines; a partial one is read again on the next round
                cut = chunk.rfind(b"\n") + 1
                offset += cut
                now = round(time.perf_counter() - t0, 2)
                for line in chunk[:cut].decode(errors="replace").splitlines():
                    if line.strip():
                        timeline.append((now, line.strip()[:160]))
            if server.process.poll() is not None:
                raise RuntimeError(f"engram serve exited {server.process.returncode}: {timeline}")
            try:
                if client.get(f"{server.base_url}/readyz").status_code == 200:
                    ready_s = time.perf_counter() - t0
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    if ready_s is None:
        server.process.kill()
        raise RuntimeError(f"not ready in {timeout_s} s: {timeline}")
    machine_cores = (system_busy_s() - busy0) / ready_s
    return {
        "server": server,
        "ready_s": round(ready_s, 2),
        "machine_cores_busy": round(machine_cores, 2),
        "timeline": timeline,
    }


async def short_load(server: BenchServer, messages: int, searches: int) -> dict[str, Any]:
    """Ingest ``messages`` LoCoMo turns (batches of 10, 4 clients) and run some searches."""
    turns = [t for s in locomo_sessions() for t in s][:messages]
    n_sessions = max(1, len(turns) // 50)
    users = [f"st-u{i}" for i in range(max(1, n_sessions // 4))]
    sessions = [(f"st-s{k}", users[k % len(users)]) for k in range(n_sessions)]
    batches = [
        (
            sessions[(i // 10) % n_sessions][0],
            [
                {"role": t["speaker"], "role_type": "user", "content": t["text"]}
                for t in turns[i : i + 10]
            ],
        )
        for i in range(0, len(turns), 10)
    ]
    questions = locomo_questions()[:searches]
    sampler = MemorySampler(server.process.pid, server.data_dir)
    sampler.start()
    async with ClientPool(server.base_url, server.api_key, 4) as pool:
        await create_users_sessions(pool.clients[0], users, sessions)
        queue = iter(batches)

        async def ingest(client: httpx.AsyncClient) -> None:
            for sid, msgs in queue:
                await timed(
                    client, "POST", f"/api/v2/sessions/{sid}/memory", json={"messages": msgs}
                )

        t = time.perf_counter()
        await asyncio.gather(*(ingest(c) for c in pool.clients))
        ingest_s = time.perf_counter() - t
        qs = iter(enumerate(questions))

        async def search(client: httpx.AsyncClient) -> None:
            for i, q in qs:
                await timed(
                    client,
                    "POST",
                    "/api/v2/sessions/search?limit=10",
                    json={"text": q, "user_id": users[i % len(users)]},
                )

        await asyncio.gather(*(search(c) for c in pool.clients))
    peak = await sampler.stop()
    return {
        "messages": len(turns),
        "searches": len(questions),
        "ingest_messages_per_s": round(len(turns) / ingest_s, 1),
        "peak_mb": peak,
    }


def stop_timed(server: BenchServer) -> tuple[float, int]:
    t = time.perf_counter()
    code = stop_server(server)
    return round(time.perf_counter() - t, 2), code


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    key = secrets.token_urlsafe(24)
    first = start_timed(data_dir, key)
    server: BenchServer = first.pop("server")
    print(f"first start: ready in {first['ready_s']:.2f} s")
    time.sleep(1)  # let the pool's connections open and settle
    first["memory_after_start_mb"] = memory_snapshot(server.process.pid, data_dir)
    load = asyncio.run(short_load(server, args.ingest, args.searches))
    first["memory_after_load_mb"] = memory_snapshot(server.process.pid, data_dir)
    first["load"] = load
    first["stop_s"], first["exit_code"] = stop_timed(server)

    later = []
    for i in range(args.later_starts):
        r = start_timed(data_dir, key)
        server = r.pop("server")
        print(f"later start {i + 1}: ready in {r['ready_s']:.2f} s")
        time.sleep(1)
        r["memory_after_start_mb"] = memory_snapshot(server.process.pid, data_dir)
        r["stop_s"], r["exit_code"] = stop_timed(server)
        later.append(r)
    later_median = statistics.median(r["ready_s"] for r in later) if later else None
    rss_max = max(
        first["memory_after_start_mb"]["server_rss_mb"],
        first["memory_after_load_mb"]["server_rss_mb"],
        load["peak_mb"].get("server_rss_mb", 0.0),
        *(r["memory_after_start_mb"]["server_rss_mb"] for r in later),
    )
    return {
        "params": {
            "ingest": args.ingest,
            "searches": args.searches,
            "later_starts": args.later_starts,
        },
        "first": first,
        "later": later,
        "later_median_s": later_median,
        "server_rss_max_mb": rss_max,
        "targets": {"first_s": TARGET_FIRST_S, "later_s": TARGET_LATER_S, "rss_mb": TARGET_RSS_MB},
        "met": {
            "first": first["ready_s"] <= TARGET_FIRST_S,
            "later": later_median is not None and later_median <= TARGET_LATER_S,
            "rss": rss_max <= TARGET_RSS_MB,
        },
    }


def report(result: dict[str, Any]) -> None:
    first, later, met = result["first"], result["later"], result["met"]

    def ok(flag: bool) -> str:
        return "MET" if flag else "MISSED"

    m0, m1 = first["memory_after_start_mb"], first["memory_after_load_mb"]
    rows = [
        [
            "first start to /readyz",
            f"{first['ready_s']:.2f} s",
            f"target <= {TARGET_FIRST_S:.0f} s: {ok(met['first'])}",
        ],
        *[
            [
                f"later start {i + 1}",
                f"{r['ready_s']:.2f} s",
                f"server RSS {r['memory_after_start_mb']['server_rss_mb']:.0f} MB",
            ]
            for i, r in enumerate(later)
        ],
        [
            "later start (median)",
            f"{result['later_median_s'] or 0:.2f} s",
            f"target <= {TARGET_LATER_S:.0f} s: {ok(met['later'])}",
        ],
        ["server RSS after start", f"{m0['server_rss_mb']:.0f} MB", "VmRSS"],
        [
            "server RSS after load",
            f"{m1['server_rss_mb']:.0f} MB",
            f"peak {first['load']['peak_mb'].get('server_rss_mb', 0):.0f} MB during "
            f"{first['load']['messages']} msgs + {first['load']['searches']} searches",
        ],
        [
            "server RSS max",
            f"{result['server_rss_max_mb']:.0f} MB",
            f"target <= {TARGET_RSS_MB:.0f} MB: {ok(met['rss'])}",
        ],
        [
            "postgres RSS sum / PSS sum after load",
            f"{m1['postgres_rss_sum_mb']:.0f} / {m1['postgres_pss_sum_mb']:.0f} MB",
            f"{m1['postgres_processes']} processes",
        ],
        ["stop (SIGTERM to exit)", f"{first['stop_s']:.2f} s", f"exit code {first['exit_code']}"],
    ]
    print()
    print(table(rows, ["figure", "value", "note"]))
    for label, r in (
        ("first start", first),
        *((f"later start {i + 1}", r) for i, r in enumerate(later[:1])),
    ):
        print(f"\n{label} timeline (seconds since exec, as each log line appeared):")
        for t, line in r["timeline"][:40]:
            print(f"  {t:6.2f}  {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--later-starts", type=int, default=3, help="restarts on the same dir")
    ap.add_argument("--ingest", type=int, default=1_000, help="messages in the short ingest")
    ap.add_argument("--searches", type=int, default=200, help="searches after the ingest")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument(
        "--max-wait-quiet", type=float, default=600, help="wait for an idle machine (s)"
    )
    ap.add_argument("--json", type=Path, default=default_json(NAME), help="result file")
    args = ap.parse_args()
    if not 0 <= args.later_starts <= 20 or not 10 <= args.ingest <= 100_000:
        ap.error("--later-starts must be in 0..20 and --ingest in 10..100,000")

    print_machine(machine())
    quiet = wait_quiet(max_wait_s=args.max_wait_quiet)
    root = short_tmpdir("egu-")
    try:
        result = run(args, root / "d")
    finally:
        for server in LIVE:
            if server.process.poll() is None:
                stop_server(server)
        if not args.keep:
            remove_tree(root)
    result["other_cores_busy_before"] = quiet
    report(result)
    path = write_json(args.json, NAME, result)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()

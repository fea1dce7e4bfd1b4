"""Overload: one tenant floods costly searches while another tenant and the probes go on.

Tenant A holds one user with --messages messages (LoCoMo turns, sent through the API
four at a time as an agent would, an episode each, with the in-process worker building
the user's graph); tenant B a small user. With --cite N, each of A's facts then cites N
episodes (its user's messages), as facts said again and again over a long history do
(the local extractor's graph of LoCoMo cites a few dozen at most). Then:

1. quiet: /healthz and B's GETs (its session's memory, its user, its session) alone,
   for --seconds;
2. flood: --flooders clients of tenant A (one API key each) send
   ``POST /api/v2/sessions/search`` for A's user with the largest ``limit`` the server
   allows (alternately ``mmr`` and ``similarity``), while the same probes run.

It prints /healthz p50/p99 and B's GET p50/p95 in both phases, B's flood p95 over its
quiet p95, the flood's answers by status (200; 429 refused by a limit; 503 overloaded),
and the CPU seconds of the server and of PostgreSQL per flood search answered. With
--baseline-src (another version's src/), that version's server is measured first on a
copy of the same data (its flood asks for --baseline-limit, as that version allowed).

    .venv/bin/python bench/overload.py [--messages 10000] [--flooders 8] [--seconds 30]
    git archive 9267709 src | tar -x -C /tmp/base
    .venv/bin/python bench/overload.py --cite 600 --baseline-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    BenchServer,
    check_disk,
    cpu_delta,
    cpu_snapshot,
    job_counts,
    locomo_questions,
    locomo_sessions,
    machine,
    percentiles,
    print_machine,
    remove_tree,
    short_tmpdir,
    start_server,
    stop_server,
    table,
    wait_quiet,
    write_json,
)

FLOOD_USER = "flood-user"
QUIET_USER = "quiet-user"
BATCH = 4  # messages per POST memory while loading (an episode each)


def _client(server: BenchServer, key: str, timeout_s: float = 120) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Api-Key {key}"},
        timeout=timeout_s,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def _ok(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> dict[str, Any]:
    r = await client.request(method, url, **kw)
    if r.status_code >= 300:
        raise RuntimeError(f"{method} {url} -> {r.status_code}: {r.text[:500]}")
    return r.json() if r.content else {}


async def make_keys(server: BenchServer, flooders: int) -> dict[str, Any]:
    """Tenants a and b; one writer key per flooder for a, one for b."""
    async with _client(server, server.api_key) as admin:
        for t in ("a", "b"):
            r = await admin.post("/v1/admin/tenants", json={"id": t})
            if r.status_code not in (201, 409):
                raise RuntimeError(f"tenant {t}: {r.status_code} {r.text}")
        keys: dict[str, Any] = {"a": [], "b": None}
        for i in range(flooders + 1):
            body = {"name": f"a{i}", "role": "writer", "tenant": "a"}
            keys["a"].append((await _ok(admin, "POST", "/v1/admin/apikeys", json=body))["key"])
        body = {"name": "b", "role": "writer", "tenant": "b"}
        keys["b"] = (await _ok(admin, "POST", "/v1/admin/apikeys", json=body))["key"]
    return keys


async def _send(
    client: httpx.AsyncClient, user: str, stream: int, texts: list[dict[str, str]]
) -> None:
    """``texts`` as the user's messages, BATCH per request, 50 requests per session."""
    for n, start in enumerate(range(0, len(texts), BATCH)):
        sid = f"{user}-{stream}-{n // 50}"
        if n % 50 == 0:
            await _ok(client, "POST", "/api/v2/sessions", json={"session_id": sid, "user_id": user})
        batch = [
            {"role": t["speaker"], "role_type": "user", "content": t["text"]}
            for t in texts[start : start + BATCH]
        ]
        await _ok(client, "POST", f"/api/v2/sessions/{sid}/memory", json={"messages": batch})


async def load(server: BenchServer, keys: dict[str, Any], messages: int) -> dict[str, Any]:
    """A's user with ``messages`` messages (LoCoMo turns in order, again from the start
    when they run out), B's with 40; waits for the graph to be built."""
    turns = [t for s in locomo_sessions() for t in s]
    texts = [turns[i % len(turns)] for i in range(messages)]
    t0 = time.perf_counter()
    streams = 4
    share = -(-messages // streams)
    async with _client(server, keys["b"]) as b:
        await _ok(b, "POST", "/api/v2/users", json={"user_id": QUIET_USER})
        await _send(b, QUIET_USER, 0, turns[:40])
    clients = [_client(server, keys["a"][0]) for _ in range(streams)]
    try:
        await _ok(clients[0], "POST", "/api/v2/users", json={"user_id": FLOOD_USER})
        await asyncio.gather(*(
            _send(c, FLOOD_USER, i, texts[i * share : (i + 1) * share])
            for i, c in enumerate(clients)
        ))  # fmt: skip
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    ingest_s = time.perf_counter() - t0
    dsn = server.superuser_dsn()
    while True:
        counts = job_counts(dsn)
        if not counts.get("todo") and not counts.get("doing"):
            break
        await asyncio.sleep(1)
    return describe(server) | {
        "ingest_s": round(ingest_s, 1), "graph_built_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def describe(server: BenchServer) -> dict[str, Any]:
    """Tenant A's messages, episodes, facts, entities and most episodes cited by a fact."""
    import psycopg

    with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM messages WHERE tenant_id = 'a'),
                      (SELECT count(*) FROM episodes WHERE tenant_id = 'a'),
                      (SELECT count(*) FROM facts WHERE tenant_id = 'a'),
                      (SELECT count(*) FROM entities WHERE tenant_id = 'a'),
                      (SELECT max(cardinality(episodes)) FROM facts WHERE tenant_id = 'a')"""
        ).fetchone()
        conn.execute("ANALYZE")
    assert row is not None
    return {
        "messages": row[0], "episodes": row[1], "facts": row[2], "entities": row[3],
        "most_episodes_per_fact": row[4],
    }  # fmt: skip


def cite(server: BenchServer, n: int) -> dict[str, Any]:
    """Make each of A's facts cite the same ``n`` of its user's messages as episodes, as
    facts said again and again over a long history do (the local extractor's graph of
    LoCoMo cites at most a few dozen)."""
    import psycopg

    with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
        conn.execute(
            """WITH e AS (SELECT array_agg(uuid) AS a FROM (
                              SELECT uuid FROM messages WHERE tenant_id = 'a'
                              ORDER BY uuid LIMIT %s) m)
               UPDATE facts f SET episodes = e.a FROM e WHERE f.tenant_id = 'a'""",
            (n,),
        )
    return {"episodes_per_fact": n}


class Probe:
    """/healthz and B's GETs, one after the other, each on its own connection."""

    def __init__(self, server: BenchServer, key_b: str) -> None:
        self.server, self.key_b = server, key_b
        self.health: list[float] = []
        self.reads: list[float] = []
        self.statuses: dict[str, int] = {}

    async def _health(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=120) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = await c.get("/healthz")
                self.health.append((time.perf_counter() - t0) * 1000)
                self._count("healthz", r.status_code)
                await asyncio.sleep(0.02)

    async def _reads(self, stop: asyncio.Event) -> None:
        sid = f"{QUIET_USER}-0-0"
        urls = [f"/api/v2/sessions/{sid}/memory?lastn=20", f"/api/v2/users/{QUIET_USER}",
                f"/api/v2/sessions/{sid}"]  # fmt: skip
        i = 0
        async with _client(self.server, self.key_b) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = await c.get(urls[i % len(urls)])
                ms = (time.perf_counter() - t0) * 1000
                self._count("b_get", r.status_code)
                if r.status_code == 200:
                    self.reads.append(ms)
                i += 1
                await asyncio.sleep(0.02)

    def _count(self, what: str, status: int) -> None:
        k = f"{what} {status}"
        self.statuses[k] = self.statuses.get(k, 0) + 1

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._health(stop), self._reads(stop))

    def figures(self) -> dict[str, Any]:
        return {
            "healthz_ms": percentiles(self.health),
            "healthz_max_ms": round(max(self.health), 1) if self.health else None,
            "b_get_ms": percentiles(self.reads),
            "b_get_max_ms": round(max(self.reads), 1) if self.reads else None,
            "requests": {"healthz": len(self.health), "b_get": len(self.reads)},
            "statuses": dict(sorted(self.statuses.items())),
        }


async def flood(
    server: BenchServer, keys: list[str], limit: int, stop: asyncio.Event,
    statuses: dict[int, int], latencies: list[float],
) -> None:  # fmt: skip
    questions = locomo_questions()

    async def one(i: int, key: str) -> None:
        async with _client(server, key) as c:
            n = 0
            while not stop.is_set():
                kind = "mmr" if (i + n) % 2 == 0 else "similarity"
                body = {"text": questions[(i * 97 + n) % len(questions)],
                        "user_id": FLOOD_USER, "search_type": kind}  # fmt: skip
                t0 = time.perf_counter()
                r = await c.post(f"/api/v2/sessions/search?limit={limit}", json=body)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1000)
                elif r.status_code in (429, 503):
                    # A polite client waits as told; a flood does not wait long.
                    wait = float(r.headers.get("retry-after", "1"))
                    await asyncio.sleep(min(wait, 0.2))
                elif r.status_code >= 400:
                    raise RuntimeError(f"search -> {r.status_code}: {r.text[:300]}")
                n += 1

    await asyncio.gather(*(one(i, k) for i, k in enumerate(keys)))


async def measure(
    server: BenchServer, keys: dict[str, Any], flooders: int, seconds: float, limit: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Warm up: every route once (first requests load code and prepare statements).
    stop = asyncio.Event()
    probe = Probe(server, keys["b"])
    task = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(2)
    stop.set()
    await task

    stop = asyncio.Event()
    probe = Probe(server, keys["b"])
    task = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    out["quiet"] = probe.figures()

    stop = asyncio.Event()
    probe = Probe(server, keys["b"])
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    before = cpu_snapshot(server.process.pid, server.data_dir)
    t0 = time.perf_counter()
    flooding = asyncio.create_task(
        flood(server, keys["a"][1 : flooders + 1], limit, stop, statuses, latencies)
    )
    probing = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(flooding, probing)
    wall = time.perf_counter() - t0
    used = cpu_delta(before, cpu_snapshot(server.process.pid, server.data_dir), wall)
    answered = statuses.get(200, 0)
    out["flood"] = probe.figures() | {
        "search_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "search_ms": percentiles(latencies),
        "searches_per_s": round(answered / wall, 2),
        "wall_s": round(wall, 1),
        "cpu": used,
        "cpu_ms_per_search": {
            k: round(1000 * used["cpu_s"][k] / max(answered, 1), 1) for k in ("server", "postgres")
        },
    }
    quiet_p95 = out["quiet"]["b_get_ms"]["p95"]
    out["b_get_p95_over_quiet"] = round(out["flood"]["b_get_ms"]["p95"] / quiet_p95, 2)
    return out


def report(label: str, r: dict[str, Any]) -> None:
    q, f = r["quiet"], r["flood"]
    print(f"{label}: flood limit={r['limit']}, {r['flooders']} clients of tenant a")
    print(table(
        [["quiet", q["healthz_ms"]["p50"], q["healthz_ms"]["p99"], q["b_get_ms"]["p50"],
          q["b_get_ms"]["p95"], "", ""],
         ["flood", f["healthz_ms"]["p50"], f["healthz_ms"]["p99"], f["b_get_ms"]["p50"],
          f["b_get_ms"]["p95"], f["searches_per_s"], f["search_ms"].get("p95", "")]],
        ["phase", "healthz p50", "healthz p99", "b GET p50", "b GET p95", "search/s",
         "search p95"],
    ))  # fmt: skip
    print(
        f"  b GET p95 flood/quiet: {r['b_get_p95_over_quiet']}x;"
        f" search answers: {f['search_statuses']}; probe answers: {f['statuses']}"
    )
    print(f"  CPU per search answered: server {f['cpu_ms_per_search']['server']} ms,"
          f" PostgreSQL {f['cpu_ms_per_search']['postgres']} ms;"
          f" cores busy {f['cpu']['cores_busy']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--limit", type=int, default=100, help="the flood's search limit")
    parser.add_argument(
        "--cite", type=int, default=0,
        help="make each of the flooding tenant's facts cite this many episodes",
    )  # fmt: skip
    parser.add_argument(
        "--tenant-concurrency", type=int, nargs="*", default=[],
        help="also measure with limits.concurrent_requests_per_tenant at each of these",
    )  # fmt: skip
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--baseline-limit", type=int, default=1000)
    parser.add_argument("--quiet-wait", type=float, default=300, help="max s to wait for quiet")
    parser.add_argument("--data-dir", type=Path, help="reuse (or keep) this data directory")
    parser.add_argument("--json", type=Path, default=Path("bench/results/overload.json"))
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    result: dict[str, Any] = {"params": {k: str(v) for k, v in vars(args).items()}}
    check_disk(Path("/tmp"), 3)
    root = short_tmpdir("ego-")
    data = args.data_dir or root / "d"
    fresh = not (data / "keys.txt").exists()
    api_key = (data / "keys.txt").read_text().split()[0] if not fresh else None
    server = start_server(data, api_key=api_key)
    try:
        if fresh:
            keys = asyncio.run(make_keys(server, args.flooders))
            result["data"] = asyncio.run(load(server, keys, args.messages))
            (data / "keys.txt").write_text(" ".join([server.api_key, keys["b"], *keys["a"]]) + "\n")
        else:
            words = (data / "keys.txt").read_text().split()
            keys = {"b": words[1], "a": words[2:]}
        if args.cite:
            cite(server, args.cite)
        result["data"] = result.get("data", {}) | describe(server)
        print("data:", result["data"])
        # (label, its data directory, the server's environment, the flood's limit)
        runs: list[tuple[str, Path, dict[str, str] | None, int]] = []
        if args.baseline_src:
            subprocess.run(["cp", "-a", str(data), str(root / "b")], check=True)
            env = {"PYTHONPATH": str(args.baseline_src.resolve())}
            runs.append(("baseline", root / "b", env, args.baseline_limit))
        runs.append(("this", data, None, args.limit))
        for n in args.tenant_concurrency:
            env = {"ENGRAM_LIMITS__CONCURRENT_REQUESTS_PER_TENANT": str(n)}
            runs.append((f"this, concurrent_requests_per_tenant={n}", data, env, args.limit))
        api_key = server.api_key
        stop_server(server)
        for label, where, env, limit in runs:
            server = start_server(where, api_key=api_key, env=env)
            result["quiet_cores_before_" + label] = wait_quiet(max_wait_s=args.quiet_wait)
            r = asyncio.run(measure(server, keys, args.flooders, args.seconds, limit))
            result[label] = r | {"limit": limit, "flooders": args.flooders, "env": env}
            stop_server(server)
    finally:
        stop_server(server)
        remove_tree(root / "b")
        if args.data_dir is None:
            remove_tree(root)
    for label, *_ in runs:
        report(label, result[label])
    print("wrote", write_json(args.json, "overload", result | {"machine": info}))


if __name__ == "__main__":
    main()

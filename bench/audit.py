"""Audit overhead: the latency of GET memory and of a search (each writes an audit
record before it answers) next to the cost of one audit append on its own.

    .venv/bin/python bench/audit.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    default_json,
    machine,
    percentiles,
    print_machine,
    remove_tree,
    short_tmpdir,
    write_json,
)
from engram.audit.log import record_now
from engram.store.db import Database
from engram.store.embedded import EmbeddedPostgres

ENGRAM = str(Path(sys.executable).with_name("engram"))


def _timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1000)
    return out


async def _appends(dsn: str, n: int) -> list[float]:
    db = Database(dsn, min_size=1, max_size=2, timeout_s=5)
    await db.open()
    out = []
    try:
        for i in range(n):
            t = time.perf_counter()
            await record_now(db, "bench", actor="bench", action="GET /bench", resource=f"/b/{i}")
            out.append((time.perf_counter() - t) * 1000)
    finally:
        await db.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    n = args.requests
    root = short_tmpdir("eg-bench-")
    key, port = secrets.token_urlsafe(24), 18000 + secrets.randbelow(2000)
    proc = subprocess.Popen(
        [ENGRAM, "serve", "--data-dir", str(root / "d"), "--port", str(port), "--api-key", key,
         "--no-worker"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        http = httpx.Client(base_url=base, headers={"Authorization": f"Api-Key {key}"})
        http.post("/api/v2/users", json={"user_id": "u"})
        http.post("/api/v2/sessions", json={"session_id": "s", "user_id": "u"})
        msgs = [{"role_type": "user", "content": f"I moved to city number {i} in {2000 + i}"}
                for i in range(50)]  # fmt: skip
        http.post("/api/v2/sessions/s/memory", json={"messages": msgs})
        for _ in range(20):  # warm up
            http.get("/api/v2/sessions/s/memory")
        get_ms = _timed(lambda: http.get("/api/v2/sessions/s/memory").raise_for_status(), n)
        search_ms = _timed(
            lambda: http.post(
                "/v1/search", json={"text": "which city", "user_id": "u"}
            ).raise_for_status(),
            n,
        )
        whoami_ms = _timed(lambda: http.get("/v1/whoami").raise_for_status(), n)
        http.post("/v1/admin/tenants", json={"id": "bench"})
        dsn = EmbeddedPostgres(root / "d").dsn("engram_app")
        append_ms = asyncio.run(_appends(dsn, n))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        remove_tree(root)
    info = machine()
    result = {
        "requests": n,
        "get_memory_ms": percentiles(get_ms),
        "search_ms": percentiles(search_ms),
        "whoami_ms": percentiles(whoami_ms),
        "audit_append_ms": percentiles(append_ms),
    }
    share = result["audit_append_ms"]["p50"] / result["get_memory_ms"]["p50"]
    result["append_share_of_get_memory_p50"] = round(share, 3)
    print_machine(info)
    for name in ("get_memory_ms", "search_ms", "whoami_ms", "audit_append_ms"):
        print(f"{name:18s} {result[name]}")
    print(f"one audit append = {share:.0%} of a GET memory (p50)")
    print(write_json(default_json("audit"), "audit", {"machine": info, **result}))


if __name__ == "__main__":
    main()

"""Field-level encryption: write and read latency on vs off, re-encryption speed, API
latency during a rotation.

Two servers (crypto on, crypto off) run side by side and get the same LoCoMo turns, each
with an e-mail address so that every message is protected when encryption is on. Every
request goes to both, one after the other (which one first alternates), so that both
see the same machine: on a shared machine others' load comes and goes, and servers
measured one after the other would be compared under different loads. Writes are one
message per `POST memory`, reads are `GET memory?lastn=10`, one request at a time.
Then users and sessions: `--people` users created with e-mail, first and last name and
metadata (each with a session whose metadata holds the e-mail; every one of those fields
is protected when encryption is on), then reads of single users (`GET users/{id}`) and of
pages of 10 users (the API's default page size) and of 100 (`GET users-ordered`: 100
users, so 100 data keys and 100 profiles to open). Then, on
the encrypting server, `engram keys rotate --now` re-encrypts every protected field while
reads keep going; reports fields/s and the read p95 during the run.

    .venv/bin/python bench/crypto.py [--writes 400] [--rows 5000] [--people 1000] [--json OUT]

Goals: encryption on within 10% of off (p95), API p95 during rotation <= 2x quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from common import (
    ENGRAM,
    BenchServer,
    create_users_sessions,
    default_json,
    launch,
    locomo_sessions,
    machine,
    percentiles,
    print_machine,
    remove_tree,
    short_tmpdir,
    stop_server,
    table,
    timed,
    wait_quiet,
    wait_ready,
    write_json,
)


def _turns(n: int) -> list[str]:
    out: list[str] = []
    for session in locomo_sessions():
        for turn in session:
            out.append(f"{turn['text']} (reach me at person{len(out)}@example.org)")
            if len(out) == n:
                return out
    return out


MODES = ("off", "on")


def _client(server: BenchServer, timeout: float = 60) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, timeout=timeout,
                             headers={"Authorization": f"Api-Key {server.api_key}"})  # fmt: skip


async def _in_turn(
    clients: dict[str, httpx.AsyncClient], lat: dict[str, list[float]], i: int, method: str,
    url: str, **kw: Any,
) -> None:  # fmt: skip
    """The same request to both servers, one after the other; which goes first alternates."""
    for mode in MODES if i % 2 == 0 else MODES[::-1]:
        lat[mode].append(await timed(clients[mode], method, url, **kw))


def _lists() -> dict[str, list[float]]:
    return {m: [] for m in MODES}


async def _writes(clients: dict[str, httpx.AsyncClient], texts: list[str]) -> dict[str, Any]:
    for c in clients.values():
        await create_users_sessions(c, ["u0"], [("s0", "u0")])
    lat = _lists()
    for i, t in enumerate(texts):
        body = {"messages": [{"role_type": "user", "content": t}]}
        await _in_turn(clients, lat, i, "POST", "/api/v2/sessions/s0/memory", json=body)
    return lat


async def _reads(server: BenchServer, n: int, stop: asyncio.Event | None = None) -> list[float]:
    async with _client(server) as c:
        lat = []
        while (stop is None and len(lat) < n) or (stop is not None and not stop.is_set()):
            lat.append(await timed(c, "GET", "/api/v2/sessions/s0/memory?lastn=10"))
        return lat


async def _people(clients: dict[str, httpx.AsyncClient], n: int) -> dict[str, dict[str, Any]]:
    """Create `n` users each with a session, then read them back; latencies per kind."""
    users, sessions, gets, pages, small = _lists(), _lists(), _lists(), _lists(), _lists()
    for i in range(n):
        user = {
            "user_id": f"p{i}",
            "email": f"person{i}@example.org",
            "first_name": "Ada",
            "last_name": f"Lovelace{i}",
            "metadata": {"phone": f"+1 415 555 {i:04d}"},
        }
        await _in_turn(clients, users, i, "POST", "/api/v2/users", json=user)
        session = {
            "session_id": f"ps{i}",
            "user_id": f"p{i}",
            "metadata": {"contact": f"person{i}@example.org"},
        }
        await _in_turn(clients, sessions, i, "POST", "/api/v2/sessions", json=session)
    for i in range(n):
        await _in_turn(clients, gets, i, "GET", f"/api/v2/users/p{i}")
    for i in range(max(300, n // 2)):  # p95 of 300: the 15th slowest, not the 5th
        page = 1 + i % max(1, n // 100)
        url = f"/api/v2/users-ordered?pageNumber={page}&pageSize=100"
        await _in_turn(clients, pages, i, "GET", url)
    for i in range(n):  # the API's default page size
        url = f"/api/v2/users-ordered?pageNumber={1 + i % max(1, n // 10)}&pageSize=10"
        await _in_turn(clients, small, i, "GET", url)
    return {m: {"user_add": percentiles(users[m]), "session_add": percentiles(sessions[m]),
                "user_get": percentiles(gets[m]), "users_page_100": percentiles(pages[m]),
                "users_page_10": percentiles(small[m])}
            for m in MODES}  # fmt: skip


async def _bulk(server: BenchServer, texts: list[str]) -> None:
    async with _client(server, timeout=120) as c:
        for i in range(0, len(texts), 100):
            msgs = [{"role_type": "user", "content": t} for t in texts[i : i + 100]]
            await timed(c, "POST", "/api/v2/sessions/s0/memory", json={"messages": msgs})


def _app_dsn(server: BenchServer) -> str:
    from engram.store.embedded import EmbeddedPostgres

    return EmbeddedPostgres(server.data_dir).dsn("engram_app", "engram")


async def _rotation(server: BenchServer) -> dict[str, Any]:
    stop = asyncio.Event()
    reads = asyncio.create_task(_reads(server, 0, stop))
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        ENGRAM, "keys", "rotate", "--now", "--data-dir", str(server.data_dir),
        "--database-url", _app_dsn(server),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    lat = await reads
    text = out.decode()
    if proc.returncode != 0:
        raise RuntimeError(text)
    m = re.search(r"(\d+) field\(s\) re-encrypted", text)
    moved = int(m.group(1)) if m else 0
    return {"fields": moved, "wall_s": round(wall, 2), "fields_per_s": round(moved / wall, 1),
            "reads_during": percentiles(lat), "reads_n": len(lat)}  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=400)
    ap.add_argument("--rows", type=int, default=5000, help="messages re-encrypted")
    ap.add_argument(
        "--people",
        type=int,
        default=1000,
        help="users (each with a session); 1000 makes the p95 the 50th slowest of 1000",
    )
    ap.add_argument("--json", type=Path, default=default_json("crypto"))
    ap.add_argument("--max-wait-quiet", type=float, default=120)
    args = ap.parse_args()
    info = machine()
    print_machine(info)
    texts = _turns(args.writes + args.rows)
    results: dict[str, Any] = {}
    roots, servers = {}, {}
    try:
        for mode in MODES:
            roots[mode] = short_tmpdir(f"eg-cr{mode}-")
            env = {"ENGRAM_CRYPTO__ENABLED": "true" if mode == "on" else "false",
                   "ENGRAM_CRYPTO__REENCRYPT_PAUSE_S": os.environ.get("PAUSE", "0.02")}  # fmt: skip
            servers[mode] = launch(roots[mode] / "d", secrets.token_urlsafe(24), env=env,
                                   extra=["--no-worker"])  # fmt: skip
        for server in servers.values():
            wait_ready(server)
            await _reads_warm(server)
        waited = wait_quiet(max_wait_s=args.max_wait_quiet)
        clients = {m: _client(servers[m]) for m in MODES}
        try:
            w = await _writes(clients, texts[: args.writes])
            r = _lists()
            for i in range(args.writes):
                await _in_turn(clients, r, i, "GET", "/api/v2/sessions/s0/memory?lastn=10")
            people = await _people(clients, args.people)
        finally:
            for c in clients.values():
                await c.aclose()
        for mode in MODES:
            results[mode] = {"write": percentiles(w[mode]), "read": percentiles(r[mode]),
                             "quiet_wait_s": waited, **people[mode]}  # fmt: skip
        # Rotation on the encrypting server alone.
        stop_server(servers.pop("off"))
        on_server = servers["on"]
        await _bulk(on_server, texts[args.writes :])
        quiet = await _reads(on_server, 300)
        results["rotation"] = {"reads_quiet": percentiles(quiet), **await _rotation(on_server)}
    finally:
        for server in servers.values():
            stop_server(server)
        for root in roots.values():
            remove_tree(root)
    on, off = results["on"], results["off"]
    rot = results["rotation"]
    rows = [
        ["write p50 / p95 ms", f"{off['write']['p50']:.1f} / {off['write']['p95']:.1f}",
         f"{on['write']['p50']:.1f} / {on['write']['p95']:.1f}",
         f"{on['write']['p95'] / off['write']['p95'] - 1:+.0%}"],
        ["read p50 / p95 ms", f"{off['read']['p50']:.1f} / {off['read']['p95']:.1f}",
         f"{on['read']['p50']:.1f} / {on['read']['p95']:.1f}",
         f"{on['read']['p95'] / off['read']['p95'] - 1:+.0%}"],
    ]  # fmt: skip
    for kind in ("user_add", "session_add", "user_get", "users_page_10", "users_page_100"):
        rows.append([f"{kind} p50 / p95 ms", f"{off[kind]['p50']:.1f} / {off[kind]['p95']:.1f}",
                     f"{on[kind]['p50']:.1f} / {on[kind]['p95']:.1f}",
                     f"{on[kind]['p95'] / off[kind]['p95'] - 1:+.0%}"])  # fmt: skip
    print(table(rows, ["", "crypto off", "crypto on", "on vs off (p95)"]))
    print(f"re-encryption: {rot['fields']} fields in {rot['wall_s']} s = {rot['fields_per_s']}/s; "
          f"read p95 quiet {rot['reads_quiet']['p95']:.1f} ms, during rotation "
          f"{rot['reads_during']['p95']:.1f} ms "
          f"({rot['reads_during']['p95'] / rot['reads_quiet']['p95']:.2f}x)")  # fmt: skip
    write_json(args.json, "crypto", {"machine": info, **results})


async def _reads_warm(server: BenchServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        await c.get("/readyz")


if __name__ == "__main__":
    asyncio.run(main())

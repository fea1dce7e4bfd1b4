"""Shared pieces of the benchmarks: machine facts, percentiles, results, servers, clients.

Every benchmark runs a real `engram serve` (embedded PostgreSQL 18 + pgvector) on
127.0.0.1 and drives it through the HTTP API, prints a table and the machine it ran on,
and writes a JSON result file (default ``bench/results/<name>.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOCOMO = Path(os.environ.get("ENGRAM_BENCH_LOCOMO", "/work/shared/data/locomo"))
ENGRAM = str(Path(sys.executable).with_name("engram"))

if str(ROOT) not in sys.path:  # so that tests.fix_server is importable from the repo root
    sys.path.insert(0, str(ROOT))

# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and Python of the machine the benchmark runs on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(ram_gb, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "commit": commit or None,
    }


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM, "
        f"{info['os']}, Python {info['python']}, commit {info['commit']}"
    )


# --------------------------------------------------------------------------- figures


def percentiles(values: Sequence[float], qs: Iterable[int] = (50, 95, 99)) -> dict[str, float]:
    """p50/p95/p99 (and mean, max) of ``values``, rounded to 0.01."""
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    out = {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}
    out["mean"] = round(float(arr.mean()), 2)
    out["max"] = round(float(arr.max()), 2)
    return out


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width table."""
    cells = [[str(c) for c in header], *[[_fmt(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write the result file atomically, with the benchmark name, time and machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.rename(path)
    return path


def default_json(name: str) -> Path:
    return RESULTS / f"{name}.json"


# --------------------------------------------------------------------------- data


def locomo_files() -> list[Path]:
    files = sorted(LOCOMO.glob("*.json"))
    if not files:
        raise SystemExit(f"no LoCoMo conversations in {LOCOMO} (set ENGRAM_BENCH_LOCOMO)")
    return files


def locomo_sessions() -> list[list[dict[str, str]]]:
    """Every LoCoMo session as a list of turns ``{"speaker", "text"}``, in order."""
    out: list[list[dict[str, str]]] = []
    for path in locomo_files():
        conv = json.loads(path.read_text())
        conv = conv.get("conversation", conv)
        keys = [k for k in conv if re.fullmatch(r"session_\d+", k) and isinstance(conv[k], list)]
        for key in sorted(keys, key=lambda k: int(k.split("_")[1])):
            turns = [
                {"speaker": str(t.get("speaker", "")), "text": str(t["text"]).strip()}
                for t in conv[key]
                if str(t.get("text", "")).strip()
            ]
            if turns:
                out.append(turns)
    return out


def locomo_questions() -> list[str]:
    """Every LoCoMo question (all categories), in file order."""
    out: list[str] = []
    for path in locomo_files():
        doc = json.loads(path.read_text())
        out.extend(str(q["question"]).strip() for q in doc.get("qa", []) if q.get("question"))
    return out


def locomo_observations() -> list[str]:
    """The per-session observations (facts stated by each speaker): extra realistic text."""
    out: list[str] = []
    for path in locomo_files():
        doc = json.loads(path.read_text())
        for key, value in doc.items():
            if key.endswith("_observation") and isinstance(value, dict):
                for facts in value.values():
                    out.extend(str(f[0]).strip() for f in facts if f and str(f[0]).strip())
    return out


# --------------------------------------------------------------------------- processes


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size in MB: shared pages divided among the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name in parentheses may hold spaces: split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster of the embedded server in ``data_dir`` and all its children."""
    try:
        postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [postmaster, *_children(postmaster)]


def memory_snapshot(server_pid: int, data_dir: Path) -> dict[str, float]:
    """Server process RSS, and the postgres processes' total RSS and PSS, in MB."""
    pg = postgres_pids(data_dir)
    return {
        "server_rss_mb": round(rss_mb(server_pid), 1),
        "postgres_rss_sum_mb": round(sum(rss_mb(p) for p in pg), 1),
        "postgres_pss_sum_mb": round(sum(pss_mb(p) for p in pg), 1),
        "postgres_processes": len(pg),
    }


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_s() -> float:
    """CPU seconds all processes of the machine have used since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(server_pid: int, data_dir: Path) -> dict[str, Any]:
    """CPU seconds so far of the server, each PostgreSQL process, this process and all."""
    own = os.times()
    return {
        "server": cpu_s(server_pid),
        "postgres": {p: cpu_s(p) for p in postgres_pids(data_dir)},
        "bench_client": own.user + own.system,
        "machine": system_busy_s(),
    }


def cpu_delta(before: dict[str, Any], after: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """CPU seconds used between two snapshots, and as cores busy over ``wall_s``.

    ``other`` is what the rest of the machine used meanwhile (other people's tests and
    benchmarks on a shared machine): when it is large, the figures are pessimistic.
    """
    used = {k: round(after[k] - before[k], 2) for k in before if k != "postgres"}
    # A backend born meanwhile counts whole; one that exited meanwhile cannot be counted.
    used["postgres"] = round(
        sum(v - before["postgres"].get(p, 0.0) for p, v in after["postgres"].items()), 2
    )
    used["other"] = round(
        used["machine"] - used["server"] - used["postgres"] - used["bench_client"], 2
    )
    return {
        "cpu_s": used,
        "cores_busy": {k: round(v / wall_s, 2) for k, v in used.items()},
        "note": "postgres: processes alive at the end; a backend that exited is not counted",
    }


def wait_quiet(threshold_cores: float = 0.3, max_wait_s: float = 600) -> float:
    """Wait (bounded) until the machine is idle: other work would skew the figures.

    Returns the cores busy in the last 3-second window.
    """
    deadline = time.monotonic() + max_wait_s
    said = False
    while True:
        before = system_busy_s()
        time.sleep(3)
        busy = (system_busy_s() - before) / 3
        if busy <= threshold_cores or time.monotonic() > deadline:
            if busy > threshold_cores:
                print(f"warning: the machine is busy ({busy:.2f} cores used by others)")
            return round(busy, 2)
        if not said:
            print(f"machine busy ({busy:.2f} cores); waiting up to {max_wait_s:.0f} s for quiet")
            said = True


class MemorySampler:
    """Samples memory_snapshot every ``interval`` seconds in the background; keeps peaks."""

    def __init__(self, server_pid: int, data_dir: Path, interval: float = 0.5) -> None:
        self.server_pid, self.data_dir, self.interval = server_pid, data_dir, interval
        self.peak: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            snap = await asyncio.to_thread(memory_snapshot, self.server_pid, self.data_dir)
            for k, v in snap.items():
                self.peak[k] = max(self.peak.get(k, 0.0), v)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return dict(self.peak)


# --------------------------------------------------------------------------- servers


@dataclass
class BenchServer:
    """The subset of tests.fix_server.Server the benchmarks use."""

    base_url: str
    api_key: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def superuser_dsn(self, dbname: str = "engram") -> str:
        from engram.store.embedded import EmbeddedPostgres

        return EmbeddedPostgres(self.data_dir).dsn("postgres", dbname)


def short_tmpdir(prefix: str) -> Path:
    # Unix socket paths are limited to ~100 bytes, so data dirs stay short, under /tmp.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    data_dir: Path,
    api_key: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> BenchServer:
    """Start `engram serve` on 127.0.0.1 without waiting for it."""
    port = port or free_port()
    log = data_dir.with_suffix(".log")
    out = log.open("ab")
    process = subprocess.Popen(
        [
            ENGRAM,
            "serve",
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            api_key,
            *(extra or []),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    return BenchServer(f"http://127.0.0.1:{port}", api_key, data_dir, port, process, log)


def wait_ready(server: BenchServer, timeout_s: float = 300, poll_s: float = 0.05) -> float:
    """Poll /readyz until 200; return the seconds waited. Raise if the process exits."""
    start = time.perf_counter()
    deadline = start + timeout_s
    with httpx.Client(timeout=2) as client:
        while time.perf_counter() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"engram serve exited {server.process.returncode}:\n"
                    f"{server.log.read_text()[-4000:]}"
                )
            try:
                if client.get(f"{server.base_url}/readyz").status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
    server.process.kill()
    raise RuntimeError(f"engram serve not ready in {timeout_s}s:\n{server.log.read_text()[-4000:]}")


def start_server(
    data_dir: Path,
    api_key: str | None = None,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> BenchServer:
    """Start a server and wait until ready, through tests.fix_server when importable."""
    api_key = api_key or secrets.token_urlsafe(24)
    try:
        from tests.fix_server import start_server as fixture_start
    except ImportError:
        server = launch(data_dir, api_key, env=env, extra=extra)
        wait_ready(server)
        return server
    s = fixture_start(data_dir, api_key=api_key, extra=extra, env=env)
    return BenchServer(s.base_url, s.api_key, s.data_dir, s.port, s.process, s.log)


def stop_server(server: BenchServer, timeout_s: float = 120) -> int:
    """SIGTERM the server (it stops its embedded PostgreSQL) and wait for it."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait(timeout=30)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def check_disk(path: Path, need_gb: float) -> float:
    """Free GB at ``path``; exit with a clear message when below ``need_gb``."""
    free = shutil.disk_usage(path).free / 1024**3
    if free < need_gb:
        raise SystemExit(f"only {free:.1f} GB free in {path}; this run needs ~{need_gb:.0f} GB")
    return free


# --------------------------------------------------------------------------- database


def pg_stat_reset(dsn: str) -> None:
    """Forget pg_stat_statements so far (superuser DSN)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def pg_top(dsn: str, n: int = 6) -> list[dict[str, Any]]:
    """The statements that took the most database time since pg_stat_reset."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 100), calls,
                      round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3)
               FROM pg_stat_statements
               WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               ORDER BY total_exec_time DESC LIMIT %s""",
            (n,),
        ).fetchall()
    return [
        {"query": q, "calls": c, "total_ms": float(t), "mean_ms": float(m)} for q, c, t, m in rows
    ]


def job_counts(dsn: str) -> dict[str, int]:
    """Extraction jobs by status (empty when the job queue does not exist)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
        if not found or not found[0]:
            return {}
        rows = conn.execute("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")
        return {str(k): int(v) for k, v in rows.fetchall()}


def print_top(statements: list[dict[str, Any]]) -> None:
    print(
        table(
            [[s["query"], s["calls"], s["total_ms"], s["mean_ms"]] for s in statements],
            ["query", "calls", "total ms", "mean ms"],
        )
    )


# --------------------------------------------------------------------------- clients


class ClientPool:
    """``size`` async HTTP clients (one per concurrent worker) for one server."""

    def __init__(self, base_url: str, api_key: str, size: int, timeout_s: float = 60) -> None:
        self.clients = [
            httpx.AsyncClient(
                base_url=base_url,
                headers={"Authorization": f"Api-Key {api_key}"},
                timeout=timeout_s,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            for _ in range(size)
        ]

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))


async def timed(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> float:
    """Send one request, raise on a non-2xx status, return its latency in ms."""
    t0 = time.perf_counter()
    response = await client.request(method, url, **kw)
    ms = (time.perf_counter() - t0) * 1000
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text[:500]}")
    return ms


async def create_users_sessions(
    client: httpx.AsyncClient, users: Sequence[str], sessions: Sequence[tuple[str, str]]
) -> None:
    """Create users and then sessions ``(session_id, user_id)`` through the API."""
    for u in users:
        await timed(client, "POST", "/api/v2/users", json={"user_id": u})
    for s, u in sessions:
        await timed(client, "POST", "/api/v2/sessions", json={"session_id": s, "user_id": u})

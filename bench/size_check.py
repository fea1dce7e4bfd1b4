"""Calibration of `engram size`: predicted vs measured bytes on LoCoMo through the real API.

Each LoCoMo conversation becomes a user, each of its sessions a session; the turns are
sent in batches of ``--batch`` (one episode each) by ``--concurrency`` clients, the
in-process worker extracts facts with the local extractor, and once the queue is empty
and ``VACUUM ANALYZE`` has run, ``engram size --measure`` compares the model's
prediction with what PostgreSQL reports, table by table.

    .venv/bin/python bench/size_check.py                       # all five conversations
    .venv/bin/python bench/size_check.py --conversations 26 30 --batch 2

Target: every large table (messages, facts, entities) and the total within +-25 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from common import (
    ENGRAM,
    default_json,
    job_counts,
    locomo_files,
    machine,
    print_machine,
    remove_tree,
    short_tmpdir,
    start_server,
    stop_server,
    table,
    write_json,
)

NAME = "size-check"
TOLERANCE = 0.25


def conversations(names: list[str] | None) -> list[tuple[str, list[list[dict[str, str]]]]]:
    """(name, sessions of turns) for the chosen LoCoMo conversations."""
    out = []
    for path in locomo_files():
        if names and path.stem not in names:
            continue
        doc = json.loads(path.read_text())
        conv = doc.get("conversation", doc)
        keys = [k for k in conv if re.fullmatch(r"session_\d+", k) and isinstance(conv[k], list)]
        sessions = []
        for key in sorted(keys, key=lambda k: int(k.split("_")[1])):
            turns = [t for t in conv[key] if str(t.get("text", "")).strip()]
            if turns:
                sessions.append(turns)
        out.append((path.stem, sessions))
    return out


async def ingest(base_url: str, api_key: str, convs: Any, batch: int, concurrency: int) -> int:
    headers = {"Authorization": f"Api-Key {api_key}"}
    work: list[tuple[str, list[list[dict[str, str]]]]] = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as c:
        for name, sessions in convs:
            user = f"locomo-{name}-{secrets.token_hex(4)}"
            (await c.post("/api/v2/users", json={"user_id": user})).raise_for_status()
            for i, turns in enumerate(sessions):
                sid = f"{user}-s{i}"
                body = {"session_id": sid, "user_id": user}
                (await c.post("/api/v2/sessions", json=body)).raise_for_status()
                first = turns[0]["speaker"]
                msgs = [
                    {"role": t["speaker"], "role_type": "user" if t["speaker"] == first
                     else "assistant", "content": str(t["text"]).strip()}
                    for t in turns
                ]  # fmt: skip
                work.append((sid, [msgs[j : j + batch] for j in range(0, len(msgs), batch)]))

        async def client(items: list[tuple[str, list[list[dict[str, str]]]]]) -> int:
            sent = 0
            for sid, batches in items:
                for b in batches:
                    r = await c.post(f"/api/v2/sessions/{sid}/memory", json={"messages": b})
                    r.raise_for_status()
                    sent += len(b)
            return sent

        counts = await asyncio.gather(*(client(work[k::concurrency]) for k in range(concurrency)))
    return sum(counts)


def wait_for_jobs(dsn: str, timeout_s: float = 1800) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        counts = job_counts(dsn)
        if counts.get("todo", 0) + counts.get("doing", 0) == 0:
            return time.monotonic() - start
        time.sleep(1)
    raise SystemExit(f"extraction did not finish in {timeout_s:.0f} s: {job_counts(dsn)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conversations", nargs="*", help="LoCoMo files by name (26 30 ...)")
    ap.add_argument("--batch", type=int, default=6, help="messages per add-memory call")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", type=Path, default=default_json(NAME))
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--naptime", type=int, default=1, help="autovacuum_naptime in seconds")
    args = ap.parse_args()

    info = machine()
    print_machine(info)
    root = short_tmpdir("eg-size-")
    data_dir = root / "d"
    server = start_server(data_dir)
    try:
        # A long-running server's autovacuum keeps up with the updates that extraction
        # makes (entities gain episodes); a one-minute ingest outruns the default
        # one-minute naptime, so wake it as often as a busy server would.
        with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET autovacuum_naptime = '{args.naptime}s'")
            conn.execute("SELECT pg_reload_conf()")
        t0 = time.monotonic()
        sent = asyncio.run(
            ingest(server.base_url, server.api_key, conversations(args.conversations),
                   args.batch, args.concurrency)
        )  # fmt: skip
        ingest_s = time.monotonic() - t0
        dsn = server.superuser_dsn()
        extract_s = wait_for_jobs(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        out = root / "measure.yaml"
        subprocess.run(
            [ENGRAM, "size", "--measure", "--data-dir", str(data_dir), "--output", str(out)],
            check=True,
        )
        doc = yaml.safe_load(out.read_text())
    finally:
        stop_server(server)
        if not args.keep:
            remove_tree(root)
    rows = [
        [name, t["rows"], t["predicted_bytes"], t["actual_bytes"], f"{t['error']:+.1%}"]
        for name, t in doc["tables"].items()
    ]
    total = doc["total"]
    rows.append(["all", "", total["predicted_bytes"], total["actual_bytes"],
                 f"{total['error']:+.1%}"])  # fmt: skip
    print(f"{sent} messages in {ingest_s:.1f} s, extraction done {extract_s:.1f} s later")
    print(table(rows, ["table", "rows", "predicted bytes", "actual bytes", "error"]))
    big = ("messages", "facts", "entities")
    worst = max(abs(doc["tables"][t]["error"]) for t in big if t in doc["tables"])
    ok = worst <= TOLERANCE and abs(total["error"]) <= TOLERANCE
    print(f"largest error on messages/facts/entities {worst:.1%}, total {total['error']:+.1%}: "
          f"{'within' if ok else 'OUTSIDE'} +-{TOLERANCE:.0%}")  # fmt: skip
    write_json(args.json, NAME, {
        "params": {"conversations": args.conversations or "all", "batch": args.batch,
                   "concurrency": args.concurrency, "autovacuum_naptime_s": args.naptime},
        "messages": sent, "ingest_s": round(ingest_s, 1), "extract_s": round(extract_s, 1),
        "workload": doc["workload"], "tables": doc["tables"], "total": total,
        "within_tolerance": ok,
    })  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

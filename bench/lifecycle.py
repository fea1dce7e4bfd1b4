"""Lifecycle: archival and restore throughput, backup and restore time (the RTO figure).

A real `engram serve` (embedded PostgreSQL 18 + pgvector, no worker) gets a generated
dataset written straight into its tables as PostgreSQL's superuser: users, sessions and
messages with ~200-character texts, JSON metadata, full-text vectors and random
384-dimensional embeddings (the HNSW index is built after the load). Then:

1. archival: ``--archive`` sessions are made idle past retention and the retention job
   (the same code the worker runs) archives them to the local blob store: sessions/s;
2. restore from archive: ``engram archive restore``'s code puts ``--restore`` of them
   back: sessions/s;
3. ``engram backup --out FILE`` (pg_dump, custom format) of the whole database: seconds;
4. ``engram restore FILE`` into an empty data directory (pg_restore, indexes rebuilt):
   seconds, and seconds per GB of database, the figure docs/lifecycle.md gives as RTO.

    .venv/bin/python bench/lifecycle.py [--sessions 2000 --messages 20 --archive 300
                                         --restore 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from common import (
    ENGRAM,
    BenchServer,
    default_json,
    machine,
    print_machine,
    remove_tree,
    short_tmpdir,
    start_server,
    stop_server,
    table,
    write_json,
)

NAME = "lifecycle"

_WORDS = (
    "garden trip cello beagle sister nurse Kyoto October recipe marathon office budget "
    "meeting doctor birthday concert novel train weekend project river mountain coffee"
)


def generate(dsn: str, sessions: int, per_session: int, users: int, idle: int) -> float:
    """Write the dataset with SQL (superuser); the first ``idle`` sessions were last
    active 400 days ago. Return the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO users (tenant_id, user_id, metadata)
               SELECT 'default', 'bench-u' || u, jsonb_build_object('n', u)
               FROM generate_series(1, %s) u""",
            (users,),
        )
        conn.execute(
            """INSERT INTO sessions (tenant_id, session_id, user_id, metadata, created_at,
                                     updated_at)
               SELECT 'default', 'bench-s' || s, 'bench-u' || (s %% %s + 1),
                      jsonb_build_object('topic', 'bench', 'n', s), t, t
               FROM generate_series(1, %s) s,
                    LATERAL (SELECT CASE WHEN s <= %s THEN now() - interval '400 days'
                                         ELSE now() END AS t) x""",
            (users, sessions, idle),
        )
        # The HNSW index is built once after the load (as a bulk import would), which is
        # far faster than growing it row by row on a small machine.
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_embedding_idx'"
        ).fetchone()
        conn.execute("DROP INDEX IF EXISTS messages_embedding_idx")
        # One statement per batch of sessions keeps each transaction modest.
        batch = 100
        for first in range(1, sessions + 1, batch):
            last = min(sessions, first + batch - 1)
            conn.execute(
                """INSERT INTO messages (tenant_id, uuid, session_id, user_id, role, role_type,
                       content, metadata, token_count, embedding, search_text, created_at,
                       metadata_sensitivity)
                   SELECT 'default', gen_random_uuid(), 'bench-s' || s,
                          'bench-u' || (s %% %(users)s + 1), 'Ada',
                          CASE WHEN m %% 2 = 0 THEN 'user' ELSE 'assistant' END,
                          t.content, jsonb_build_object('turn', m, 'tags', jsonb_build_array('a')),
                          48, t.embedding, to_tsvector('english', t.content),
                          CASE WHEN s <= %(idle)s
                               THEN now() - interval '400 days' + m * interval '1 min'
                               ELSE now() END,
                          0  -- nothing to protect: classified as the API would
                   FROM generate_series(%(first)s::int, %(last)s::int) s,
                        generate_series(1, %(per)s::int) m,
                        LATERAL (SELECT
                            (SELECT string_agg(w, ' ') FROM (
                                SELECT (string_to_array(%(words)s, ' '))
                                       [1 + floor(random() * 22)::int] AS w
                                FROM generate_series(1, 30 + 0 * m * s)) x) AS content,
                            (SELECT array_agg(random() - 0.5)
                             FROM generate_series(1, 384 + 0 * m * s))::vector(384) AS embedding
                        ) t""",
                {"first": first, "last": last, "per": per_session, "users": users,
                 "words": _WORDS, "idle": idle},
            )  # fmt: skip
        if indexdef:
            conn.execute(str(indexdef[0]))
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def db_size(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def archive_and_restore(server: BenchServer, restore: int) -> dict[str, Any]:
    """Run the retention job over the idle sessions, then restore ``restore`` of them."""
    from engram.config import load_settings
    from engram.lifecycle.archive import restore_session
    from engram.lifecycle.blobs import build_blob_store
    from engram.lifecycle.retention import run_retention
    from engram.store.db import Database
    from engram.store.embedded import EmbeddedPostgres

    settings = load_settings(data_dir=server.data_dir)
    store = build_blob_store(settings.lifecycle.blob, settings.data_dir)

    async def main() -> dict[str, Any]:
        db = Database(EmbeddedPostgres(server.data_dir).dsn("engram_app"),
                      min_size=1, max_size=4, timeout_s=30)  # fmt: skip
        await db.open()
        try:
            t0 = time.perf_counter()
            report = await run_retention(db, settings, only=["default"])
            archive_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for s in range(1, restore + 1):
                await restore_session(db, store, "default", f"bench-s{s}")
            restore_s = time.perf_counter() - t0
        finally:
            await db.close()
        done = report["default"]
        archive_bytes = sum(p.stat().st_size for p in (server.data_dir / "archives").rglob("*")
                            if p.is_file())  # fmt: skip
        return {
            "archived_sessions": done["archived"],
            "archived_messages": done["archived_messages"],
            "archive_s": round(archive_s, 2),
            "archive_sessions_per_s": round(done["archived"] / archive_s, 1),
            "archive_messages_per_s": round(done["archived_messages"] / archive_s, 0),
            "archive_bytes": archive_bytes,
            "restored_sessions": restore,
            "restore_s": round(restore_s, 2),
            "restore_sessions_per_s": round(restore / restore_s, 1),
        }

    return asyncio.run(main())


def cli(*args: str) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    result = subprocess.run([ENGRAM, *args], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"engram {' '.join(args)} failed:\n{result.stderr}")
    return json.loads(result.stdout), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20, help="messages per session")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--archive", type=int, default=300, help="sessions to archive")
    parser.add_argument("--restore", type=int, default=50, help="archived sessions to restore")
    parser.add_argument("--json", type=Path, default=default_json(NAME))
    args = parser.parse_args()
    info = machine()
    print_machine(info)

    root = short_tmpdir("eglb-")
    server = start_server(root / "d", extra=["--no-worker"])
    try:
        gen_s = generate(
            server.superuser_dsn(), args.sessions, args.messages, args.users, args.archive
        )
        size = db_size(server.superuser_dsn())
        print(f"dataset: {args.sessions} sessions x {args.messages} messages written in "
              f"{gen_s:.1f} s; database {size / 1e6:.0f} MB")  # fmt: skip
        archival = archive_and_restore(server, args.restore)
        size_after = db_size(server.superuser_dsn())
        dump = root / "engram.dump"
        backup, backup_wall = cli("backup", "--out", str(dump), "--data-dir", str(server.data_dir))
    finally:
        stop_server(server)
    restored, restore_wall = cli("restore", str(dump), "--data-dir", str(root / "r"))
    restored_size = 0
    try:
        from engram.store.embedded import EmbeddedPostgres

        pg = EmbeddedPostgres(root / "r")
        pg.start()
        restored_size = db_size(pg.dsn("postgres", "engram"))
        pg.stop()
    finally:
        remove_tree(root)
    assert restored["rows"] == backup["rows"], (restored["rows"], backup["rows"])

    gb = size_after / 1e9
    result = {
        "dataset": {"sessions": args.sessions, "messages_per_session": args.messages,
                    "users": args.users, "messages": args.sessions * args.messages,
                    "embedding_dims": 384, "generate_s": round(gen_s, 1),
                    "database_bytes": size, "database_bytes_at_backup": size_after,
                    "restored_database_bytes": restored_size},
        "archival": archival,
        "backup": {"seconds": backup["seconds"], "wall_s": round(backup_wall, 2),
                   "dump_bytes": backup["bytes"], "rows": backup["rows"],
                   "seconds_per_gb": round(backup["seconds"] / gb, 1)},
        "restore": {"seconds": restored["seconds"], "wall_s": round(restore_wall, 2),
                    "seconds_per_gb": round(restored["seconds"] / gb, 1),
                    "wall_s_per_gb": round(restore_wall / gb, 1)},
    }  # fmt: skip
    print(table(
        [
            ["archive (retention job)", f"{archival['archive_sessions_per_s']} sessions/s",
             f"{archival['archived_sessions']} sessions in {archival['archive_s']} s"],
            ["restore from archive", f"{archival['restore_sessions_per_s']} sessions/s",
             f"{archival['restored_sessions']} sessions in {archival['restore_s']} s"],
            ["backup (pg_dump -Fc)", f"{result['backup']['seconds_per_gb']} s/GB",
             f"{backup['seconds']} s, dump {backup['bytes'] / 1e6:.0f} MB"],
            ["restore (pg_restore)", f"{result['restore']['seconds_per_gb']} s/GB",
             f"{restored['seconds']} s ({restore_wall:.1f} s with start-up)"],
        ],
        ["step", "rate", "measured"],
    ))  # fmt: skip
    print(f"database at backup: {gb:.3f} GB")
    print(f"wrote {write_json(args.json, NAME, result)}")


if __name__ == "__main__":
    main()

"""Semantic-memory benchmark: extraction throughput of one worker, and relevant-facts
latency of GET memory on a large graph.

    .venv/bin/python bench/graph.py [--facts 100000] [--users 1] [--worker-concurrency 2]
                                    [--json OUT] [--focus-quality] [--baseline-src DIR]

Part 1 ingests every LoCoMo conversation (one user each; one request per two turns, as an
agent sends them) into a server started with --no-worker, then starts one `engram worker`
and times it from taking its first job to the last job's end: messages per second through
the whole job (load, extract, embed names and facts, resolve, upsert, commit).

With --focus-quality, part 1 then compares relevant_facts on that graph found with the
query vector GET memory uses (the mean of the latest three messages' stored embeddings)
and with the embedding of their joined text (what it used before).

Part 2 bulk-loads a graph of --facts facts spread over --users users (vectors from a pool
of real embeddings of distinct sentences, with small noise so that each row is distinct),
then measures GET /api/v2/sessions/{id}/memory, whose relevant_facts run the hybrid engine
over that graph, at concurrency 1 and 4, with the CPU each request costs the server and
PostgreSQL. With --baseline-src (another version's src/), that version's server answers on
a copy of the same graph, asked in turn with this tree's: old and new side by side, under
the same load from the rest of the machine.

    git archive main src | tar -x -C /tmp/main
    .venv/bin/python bench/graph.py --skip-worker --baseline-src /tmp/main/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from common import (
    ENGRAM,
    BenchServer,
    ClientPool,
    check_disk,
    cpu_delta,
    cpu_snapshot,
    locomo_files,
    machine,
    percentiles,
    print_machine,
    remove_tree,
    short_tmpdir,
    start_server,
    stop_server,
    table,
    timed,
    wait_quiet,
    write_json,
)

RELATIONS = ["LIVES_IN", "WORKS_AT", "LIKES", "VISITED", "HAS_FRIEND", "OWNS", "PLAYS", "READ"]


def _turns(path: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """(session date text, [(speaker, text)]) for each session of a conversation."""
    conv = json.loads(path.read_text())
    conv = conv.get("conversation", conv)
    out = []
    keys = [k for k in conv if re.fullmatch(r"session_\d+", k) and isinstance(conv[k], list)]
    for key in sorted(keys, key=lambda k: int(k.split("_")[1])):
        turns = [(t["speaker"], t["text"].strip()) for t in conv[key] if t.get("text", "").strip()]
        out.append((str(conv.get(f"{key}_date_time", "")), turns))
    return out


async def ingest_locomo(base_url: str, api_key: str) -> int:
    """Every LoCoMo conversation as one user; returns the messages sent."""
    sent = 0
    async with ClientPool(base_url, api_key, 1) as pool:
        client = pool.clients[0]
        for i, path in enumerate(locomo_files()):
            user = f"locomo-{i}"
            await timed(client, "POST", "/api/v2/users", json={"user_id": user})
            for j, (_, turns) in enumerate(_turns(path)):
                sid = f"{user}-s{j}"
                body = {"session_id": sid, "user_id": user}
                await timed(client, "POST", "/api/v2/sessions", json=body)
                for k in range(0, len(turns), 2):
                    msgs = [
                        {"role": who, "role_type": "user", "content": text}
                        for who, text in turns[k : k + 2]
                    ]
                    await timed(
                        client, "POST", f"/api/v2/sessions/{sid}/memory", json={"messages": msgs}
                    )
                    sent += len(msgs)
    return sent


def worker_throughput(
    data_dir: Path, dsn: str, messages: int, concurrency: int = 1
) -> dict[str, Any]:
    """Run one `engram worker` over the queued episodes; time first to last finished."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM episodes").fetchone()
    assert total is not None
    worker = subprocess.Popen(
        [ENGRAM, "worker", "--data-dir", str(data_dir), "--concurrency", str(concurrency)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t_start = time.perf_counter()
    try:
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(
                    """SELECT count(*) FILTER (WHERE status <> 'pending'),
                              min(processed_at), max(processed_at),
                              sum(cardinality(message_uuids)) FILTER (WHERE status = 'done'),
                              count(*) FILTER (WHERE status = 'failed')
                       FROM episodes"""
                ).fetchone()
            assert row is not None
            if row[0] == total[0]:
                break
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    wall = time.perf_counter() - t_start
    # From the worker taking its first job to the last job recorded as ended (the queue's
    # own events; an episode's processed_at is when its transaction began, which would
    # leave the last batch out).
    with psycopg.connect(dsn, autocommit=True) as conn:
        span = conn.execute(
            """SELECT max(at) FILTER (WHERE type IN ('succeeded', 'failed'))
                      - min(at) FILTER (WHERE type = 'started')
               FROM procrastinate_events"""
        ).fetchone()
    assert span is not None and span[0] is not None
    window = span[0].total_seconds()
    with psycopg.connect(dsn, autocommit=True) as conn:
        facts = conn.execute("SELECT count(*) FROM facts").fetchone()
        entities = conn.execute("SELECT count(*) FROM entities").fetchone()
    assert facts is not None and entities is not None
    return {
        "episodes": int(total[0]),
        "messages": int(row[3] or 0),
        "failed_episodes": int(row[4]),
        "messages_sent": messages,
        "facts": int(facts[0]),
        "entities": int(entities[0]),
        "wall_s_including_worker_start": round(wall, 2),
        "processing_window_s": round(window, 2),
        "messages_per_s": round(int(row[3] or 0) / window, 1) if window > 0 else None,
    }


async def focus_quality(data_dir: Path, superuser_dsn: str) -> dict[str, Any]:
    """relevant_facts at every point where an agent would read memory (after each request
    of two turns), with the query vector GET memory uses (the unit mean of the last three
    messages' stored embeddings) against the embedding of their joined text: how far the
    lists agree, and how many of their facts come from those three messages themselves."""
    from engram.config import EmbedderSettings, load_settings
    from engram.embed import build_embedder
    from engram.search.hybrid import HybridQuery, hybrid_search
    from engram.store.db import Database
    from engram.store.embedded import EmbeddedPostgres
    from engram.store.retrieval import Scope

    with psycopg.connect(superuser_dsn) as conn:
        register_vector(conn)
        rows = conn.execute(
            """SELECT s.session_id, s.user_id, m.uuid, m.content, m.embedding FROM messages m
               JOIN sessions s USING (tenant_id, session_id) ORDER BY s.session_id, m.seq"""
        ).fetchall()
        sources = conn.execute(
            "SELECT uuid::text, episodes FROM facts WHERE expired_at IS NULL AND invalid_at IS NULL"
        ).fetchall()
    by_session: dict[tuple[str, str], list[tuple[Any, str, np.ndarray]]] = {}
    for sid, user, uid, content, emb in rows:
        by_session.setdefault((sid, user), []).append((uid, content, emb.to_numpy()))
    points = [
        (user, turns[max(0, t - 2) : t + 1])
        for (_, user), turns in sorted(by_session.items())
        for t in range(1, len(turns), 2)
    ]
    embedder = build_embedder(EmbedderSettings())
    try:
        texts = [" ".join(c for _, c, _ in window) for _, window in points]
        by_text = np.concatenate(
            [embedder.embed(texts[i : i + 64]) for i in range(0, len(texts), 64)]
        )
    finally:
        embedder.close()
    settings = load_settings()
    db = Database(
        EmbeddedPostgres(data_dir).dsn("engram_app"), min_size=1, max_size=2, timeout_s=30
    )
    await db.open()
    lists: dict[str, list[list[str]]] = {"text": [], "mean": []}
    try:
        for (user, window), text_vector in zip(points, by_text, strict=True):
            mean = np.mean([e for _, _, e in window], axis=0)
            for name, vector in (("text", text_vector), ("mean", mean / np.linalg.norm(mean))):
                q = HybridQuery(
                    text=" ".join(c for _, c, _ in window), vector=vector.astype(np.float32),
                    ef_search=settings.vector.hnsw_ef_search, targets=("facts",),
                    scope=Scope(user_ids=[user]), limit=settings.relevant_facts, candidates=20,
                )  # fmt: skip
                hits = await hybrid_search(db, None, "default", q)  # type: ignore[arg-type]
                lists[name].append([str(h.item["uuid"]) for h in hits])
    finally:
        await db.close()
    source = {uid: {str(e) for e in eps} for uid, eps in sources}
    out: dict[str, Any] = {"points": len(points)}
    pairs = list(zip(lists["text"], lists["mean"], strict=True))
    out["overlap_at_10"] = round(
        float(np.mean([len(set(a) & set(b)) / max(1, len(a)) for a, b in pairs])), 3
    )
    out["same_first"] = round(float(np.mean([bool(a) and a[:1] == b[:1] for a, b in pairs])), 3)
    for name, found in lists.items():
        own, recall = [], []
        for (_, window), facts in zip(points, found, strict=True):
            ids = {str(u) for u, _, _ in window}
            own.extend(bool(source.get(f, set()) & ids) for f in facts)
            theirs = {f for f, eps in source.items() if eps & ids}
            if theirs:
                recall.append(len(theirs & set(facts)) / min(len(theirs), 10))
        out[name] = {
            "share_from_the_three_messages": round(float(np.mean(own)), 3),
            "recall_of_their_facts": round(float(np.mean(recall)), 3),
        }
    return out


def _pool_vectors(n: int) -> tuple[list[str], np.ndarray]:
    """Distinct fact-like sentences and their real local embeddings."""
    from engram.config import EmbedderSettings
    from engram.embed import build_embedder

    rng = np.random.default_rng(11)
    names = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "June"]
    things = ["Lisbon", "Oslo", "chess", "pottery", "Acme", "a red bike", "jazz", "Kyoto",
              "sourdough", "the marathon", "Dune", "a beagle", "Nairobi", "violin"]  # fmt: skip
    verbs = ["lives in", "works at", "likes", "visited", "is friends with someone from", "owns",
             "plays", "read about", "moved to", "started learning"]  # fmt: skip
    texts = [
        f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)} in {1990 + i % 35}"
        f" (note {i})."
        for i in range(n)
    ]
    embedder = build_embedder(EmbedderSettings())
    try:
        vecs = np.concatenate([embedder.embed(texts[i : i + 256]) for i in range(0, n, 256)])
    finally:
        embedder.close()
    return texts, vecs.astype(np.float32)


def bulk_graph(dsn: str, n_facts: int, n_users: int, pool: int = 4000) -> dict[str, Any]:
    """Users, one session each with three messages, entities and facts, by COPY."""
    texts, vecs = _pool_vectors(pool)
    rng = np.random.default_rng(5)
    t0 = time.perf_counter()
    per_user = n_facts // n_users
    with psycopg.connect(dsn, autocommit=False) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            cur.execute(
                """CREATE TEMP TABLE stage_facts (uuid uuid, user_id text, source_uuid uuid,
                       target_uuid uuid, relation text, fact text, fact_embedding vector(384),
                       episodes uuid[]) ON COMMIT DROP"""
            )
            for u in range(n_users):
                user = f"g-{u}"
                cur.execute(
                    "INSERT INTO users (tenant_id, user_id) VALUES ('default', %s)", (user,)
                )
                cur.execute(
                    "INSERT INTO sessions (tenant_id, session_id, user_id)"
                    " VALUES ('default', %s, %s)",
                    (f"{user}-s", user),
                )
                for _ in range(3):
                    idx = int(rng.integers(pool))
                    cur.execute(
                        """INSERT INTO messages (tenant_id, uuid, session_id, user_id, role,
                               role_type, content, token_count, embedding, search_text)
                           VALUES ('default', %s, %s, %s, 'user', 'user', %s, 10, %s,
                                   to_tsvector('english', %s))""",
                        (uuid.uuid4(), f"{user}-s", user, texts[idx], vecs[idx], texts[idx]),
                    )
                n_ent = max(2, per_user // 10)
                ent_ids = [uuid.uuid4() for _ in range(n_ent)]
                with cur.copy(
                    "COPY entities (tenant_id, uuid, user_id, name, normalized_name,"
                    " name_embedding) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "uuid", "text", "text", "text", "vector"])
                    for e, eid in enumerate(ent_ids):
                        v = vecs[int(rng.integers(pool))]
                        copy.write_row(("default", eid, user, f"entity {e}", f"entity {e}", v))
                message = uuid.uuid4()
                with cur.copy(
                    "COPY stage_facts (uuid, user_id, source_uuid, target_uuid, relation,"
                    " fact, fact_embedding, episodes) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(
                        ["uuid", "text", "uuid", "uuid", "text", "text", "vector", "uuid[]"]
                    )
                    for _ in range(per_user):
                        idx = int(rng.integers(pool))
                        noisy = vecs[idx] + rng.normal(0, 0.02, vecs.shape[1]).astype(np.float32)
                        noisy /= np.linalg.norm(noisy)
                        copy.write_row(
                            (
                                uuid.uuid4(), user,
                                ent_ids[int(rng.integers(n_ent))],
                                ent_ids[int(rng.integers(n_ent))],
                                RELATIONS[idx % len(RELATIONS)], texts[idx], noisy, [message],
                            )
                        )  # fmt: skip
            cur.execute(
                """INSERT INTO facts (tenant_id, uuid, user_id, source_uuid, target_uuid,
                       relation, fact, fact_embedding, search_text, episodes)
                   SELECT 'default', uuid, user_id, source_uuid, target_uuid, relation, fact,
                          fact_embedding, to_tsvector('english', fact), episodes
                   FROM stage_facts"""
            )
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE entities")
        conn.execute("VACUUM ANALYZE facts")
        conn.execute("VACUUM ANALYZE messages")
        size = conn.execute("SELECT pg_total_relation_size('facts')").fetchone()
    assert size is not None
    return {
        "facts": per_user * n_users,
        "users": n_users,
        "facts_per_user": per_user,
        "load_s": round(time.perf_counter() - t0, 1),
        "facts_total_mb": round(int(size[0]) / 1e6, 1),
    }


async def memory_latency(
    servers: dict[str, BenchServer], n_users: int, requests: int, concurrency: int
) -> dict[str, dict[str, Any]]:
    """GET memory latency per server; with several, they are asked in turn (rounds of 20
    requests per client, which server goes first alternating), so that the machine's other
    load falls on each alike. CPU per request of each server and its PostgreSQL too."""
    rng = np.random.default_rng(3)
    targets = [f"g-{int(rng.integers(n_users))}-s" for _ in range(requests + 30)]
    pools = {name: ClientPool(s.base_url, s.api_key, concurrency) for name, s in servers.items()}
    out: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    cpu = {name: {"server": 0.0, "postgres": 0.0} for name in servers}
    wall = dict.fromkeys(servers, 0.0)
    loads = []
    try:
        for name, pool in pools.items():
            for sid in targets[:30]:  # warm-up
                await timed(pool.clients[0], "GET", f"/api/v2/sessions/{sid}/memory")
            check = await pool.clients[0].get(f"/api/v2/sessions/{targets[0]}/memory")
            out[name] = {"relevant_facts": [f["uuid"] for f in check.json()["relevant_facts"]]}
        per_round = 20 * concurrency
        queue = list(targets[30:])
        for i in range(0, requests, per_round):
            batch = queue[i : i + per_round]
            loads.append(os.getloadavg()[0])
            names = list(servers) if (i // per_round) % 2 == 0 else list(reversed(servers))
            for name in names:
                server, todo = servers[name], list(batch)
                before = cpu_snapshot(server.process.pid, server.data_dir)
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(_drain(c, todo, latencies[name]) for c in pools[name].clients)
                )
                wall[name] += time.perf_counter() - t0
                used = cpu_delta(before, cpu_snapshot(server.process.pid, server.data_dir), 1)
                for part in ("server", "postgres"):
                    cpu[name][part] += used["cpu_s"][part]
    finally:
        for pool in pools.values():
            await pool.__aexit__(None, None, None)
    for name in servers:
        n = len(latencies[name])
        out[name] |= {
            "requests": n,
            "concurrency": concurrency,
            "relevant_facts_returned": len(out[name]["relevant_facts"]),
            "rps": round(n / wall[name], 1),
            "latency_ms": percentiles(latencies[name]),
            "cpu_ms_per_request": {k: round(v * 1000 / n, 2) for k, v in cpu[name].items()},
            "loadavg_1m": [round(min(loads), 2), round(max(loads), 2)],
        }
    return out


async def _drain(client: httpx.AsyncClient, sessions: list[str], latencies: list[float]) -> None:
    """GET the memory of sessions taken from the shared list until it is empty."""
    while sessions:
        sid = sessions.pop()
        latencies.append(await timed(client, "GET", f"/api/v2/sessions/{sid}/memory"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument(
        "--worker-concurrency", type=int, default=1, help="jobs the worker runs at a time"
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--focus-quality", action="store_true",
        help="after the worker: relevant facts with GET memory's query vector vs the text's",
    )  # fmt: skip
    parser.add_argument("--quiet-wait", type=float, default=600, help="max s to wait for quiet")
    parser.add_argument(
        "--baseline-src", type=Path,
        help="a src/ directory of another version (e.g. `git archive main src`): its server "
        "answers on a copy of the same graph, asked in turn with this tree's",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("bench/results/graph.json"))
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    result: dict[str, Any] = {"params": vars(args) | {"json": str(args.json)}}

    if not args.skip_worker:
        result["quiet_cores_before_worker"] = wait_quiet(max_wait_s=args.quiet_wait)
        root = short_tmpdir("egg-")
        server = start_server(root / "d", extra=["--no-worker"])
        try:
            sent = asyncio.run(ingest_locomo(server.base_url, server.api_key))
            dsn = server.superuser_dsn()
            result["worker"] = worker_throughput(
                server.data_dir, dsn, sent, args.worker_concurrency
            )
            if args.focus_quality:
                result["focus_quality"] = asyncio.run(focus_quality(server.data_dir, dsn))
        finally:
            stop_server(server)
            remove_tree(root)
        w = result["worker"]
        print(table([[w["episodes"], w["messages"], w["facts"], w["processing_window_s"],
                      w["messages_per_s"]]],
                    ["episodes", "messages", "facts", "window s", "msg/s"]))  # fmt: skip
        if args.focus_quality:
            fq = result["focus_quality"]
            print(f"relevant_facts at {fq['points']} points, query vector: stored embeddings' "
                  f"mean vs the joined text embedded: overlap@10 {fq['overlap_at_10']}, "
                  f"same first fact {fq['same_first']}")  # fmt: skip
            cells = [
                [n, fq[n]["share_from_the_three_messages"], fq[n]["recall_of_their_facts"]]
                for n in ("mean", "text")
            ]
            print(table(cells, ["vector", "facts from the 3 messages", "recall of their facts"]))

    if args.skip_latency:
        print("wrote", write_json(args.json, "graph", result | {"machine": info}))
        return
    check_disk(Path("/tmp"), 4 if args.baseline_src else 2)
    root = short_tmpdir("egf-")
    # With a baseline, the graph is loaded at its schema; this tree's server then migrates
    # its own copy at start, as an upgrade would.
    base_env = {"PYTHONPATH": str(args.baseline_src.resolve())} if args.baseline_src else None
    servers = {"this": start_server(root / "d", extra=["--no-worker"], env=base_env)}
    try:
        result["graph"] = bulk_graph(servers["this"].superuser_dsn(), args.facts, args.users)
        if args.baseline_src:
            stop_server(servers.pop("this"))
            # cp -a: the files stay the embedded server's OS user's (copytree would not).
            subprocess.run(["cp", "-a", str(root / "d"), str(root / "b")], check=True)
            servers["baseline"] = start_server(root / "b", extra=["--no-worker"], env=base_env)
            servers["this"] = start_server(root / "d", extra=["--no-worker"])
        result["quiet_cores_before_latency"] = wait_quiet(max_wait_s=args.quiet_wait)
        for conc in (1, 4):
            by_server = asyncio.run(memory_latency(servers, args.users, args.requests, conc))
            result[f"memory_c{conc}"] = by_server.pop("this")
            if "baseline" in by_server:
                result[f"memory_c{conc}"]["baseline"] = by_server["baseline"]
    finally:
        for server in servers.values():
            stop_server(server)
        remove_tree(root)
    rows = []
    for c in (1, 4):
        r = result[f"memory_c{c}"]
        for label, m in (("", r), ("baseline ", r.get("baseline"))):
            if m is None:
                continue
            lat, used, load = m["latency_ms"], m["cpu_ms_per_request"], m["loadavg_1m"]
            rows.append([f"{label}{c}", lat["p50"], lat["p95"], lat["p99"], m["rps"],
                         used["server"], used["postgres"], f"{load[0]}-{load[1]}"])  # fmt: skip
    print(f"GET memory with relevant_facts over {result['graph']['facts']} facts "
          f"({result['graph']['facts_per_user']} per user):")  # fmt: skip
    print(table(rows, ["concurrency", "p50 ms", "p95 ms", "p99 ms", "req/s", "server CPU ms",
                       "PostgreSQL CPU ms", "load"]))  # fmt: skip
    if args.baseline_src:
        ours, theirs = (result["memory_c1"][k] for k in ("relevant_facts", "baseline"))
        same = len(set(ours) & set(theirs["relevant_facts"]))
        print(f"relevant facts in common with the baseline's: {same} of {len(ours)}")
    print("wrote", write_json(args.json, "graph", result | {"machine": info}))


if __name__ == "__main__":
    main()

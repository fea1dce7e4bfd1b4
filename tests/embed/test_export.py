"""The hand-built ONNX graph against a plain numpy BERT, on a tiny random model."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

from engram.embed.export import build_model, load_safetensors

CONFIG: dict[str, Any] = {
    "hidden_size": 16,
    "num_attention_heads": 4,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "layer_norm_eps": 1e-12,
    "vocab_size": 50,
    "max_position_embeddings": 20,
}
Arrays = dict[str, NDArray[Any]]


def tiny_weights(seed: int = 0) -> Arrays:
    rng = np.random.default_rng(seed)
    h, f = CONFIG["hidden_size"], CONFIG["intermediate_size"]

    def r(*shape: int) -> NDArray[np.float32]:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    w: Arrays = {
        "embeddings.word_embeddings.weight": r(CONFIG["vocab_size"], h),
        "embeddings.position_embeddings.weight": r(CONFIG["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": r(2, h),
        "embeddings.LayerNorm.weight": 1 + r(h),
        "embeddings.LayerNorm.bias": r(h),
    }
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            w[f"{p}attention.self.{n}.weight"], w[f"{p}attention.self.{n}.bias"] = r(h, h), r(h)
        w[f"{p}attention.output.dense.weight"] = r(h, h)
        w[f"{p}attention.output.dense.bias"] = r(h)
        w[f"{p}attention.output.LayerNorm.weight"] = 1 + r(h)
        w[f"{p}attention.output.LayerNorm.bias"] = r(h)
        w[f"{p}intermediate.dense.weight"], w[f"{p}intermediate.dense.bias"] = r(f, h), r(f)
        w[f"{p}output.dense.weight"], w[f"{p}output.dense.bias"] = r(h, f), r(h)
        w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"] = 1 + r(h), r(h)
    return w


def layer_norm(x: NDArray[Any], g: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    eps = float(CONFIG["layer_norm_eps"])
    out: NDArray[Any] = (x - mu) / np.sqrt(var + eps) * g + b
    return out


def reference(w: Arrays, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> NDArray[Any]:
    """BERT + mean pooling + L2 normalisation, as sentence-transformers computes it."""
    x = w["embeddings.word_embeddings.weight"][ids].astype(np.float64)
    x += w["embeddings.position_embeddings.weight"][: ids.shape[1]]
    x += w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    heads = CONFIG["num_attention_heads"]
    b, s, h = x.shape
    erf = np.vectorize(math.erf)
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def dense(v: NDArray[Any], key: str, p: str = p) -> NDArray[Any]:
            return v @ w[f"{p}{key}.weight"].T + w[f"{p}{key}.bias"]

        q, k, v = (
            dense(x, f"attention.self.{n}").reshape(b, s, heads, -1).transpose(0, 2, 1, 3)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(h // heads)
        scores = np.where(mask[:, None, None, :] == 1, scores, -1e9)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, h)
        x = layer_norm(
            dense(ctx, "attention.output.dense") + x,
            w[f"{p}attention.output.LayerNorm.weight"],
            w[f"{p}attention.output.LayerNorm.bias"],
        )
        up = dense(x, "intermediate.dense")
        act = 0.5 * up * (1 + erf(up / math.sqrt(2)))
        x = layer_norm(
            dense(act, "output.dense") + x,
            w[f"{p}output.LayerNorm.weight"],
            w[f"{p}output.LayerNorm.bias"],
        )
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("int8", [False, True])
def test_graph_matches_numpy_bert_with_padding(int8: bool) -> None:
    w = tiny_weights()
    model = build_model(w, CONFIG, int8=int8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    ids = rng.integers(1, CONFIG["vocab_size"], size=(6, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0  # right padding, as the embedder builds its runs
    mask[2, 2:] = 0
    ids[mask == 0] = 0
    (got,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    expected = reference(w, ids, mask)
    if int8:
        assert np.sum(got * expected, axis=1).min() > 0.99  # cosine to the exact vectors
    else:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # A padded row gives the vector of the same text run alone, in int8 too: its activations
    # are quantised with its own range, not one shared with the rest of the run.
    (alone,) = session.run(None, {"input_ids": ids[1:2, :5], "attention_mask": mask[1:2, :5]})
    np.testing.assert_allclose(alone[0], got[1], atol=1e-6)


def test_load_safetensors_reads_f32_f16_and_i64(tmp_path: Path) -> None:
    tensors: Arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([0.5, -2.0], dtype=np.float16),
        "c": np.arange(4, dtype=np.int64),
    }
    kinds = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blob, offset = b"", 0
    for name, value in tensors.items():
        raw = value.tobytes()
        header[name] = {
            "dtype": kinds[value.dtype],
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blob, offset = blob + raw, offset + len(raw)
    encoded = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob)
    loaded = load_safetensors(path)
    np.testing.assert_array_equal(loaded["a"], tensors["a"])
    assert loaded["b"].dtype == np.float32
    np.testing.assert_array_equal(loaded["b"], [0.5, -2.0])
    np.testing.assert_array_equal(loaded["c"], tensors["c"])

"""Build all-MiniLM-L6-v2 as an ONNX graph straight from the packaged safetensors weights.

No torch: ``engram model prepare`` must work on a production install, where only ``onnx``,
``onnxruntime`` and ``numpy`` are present. The graph is a BERT encoder made of ONNX Runtime
CPU kernels that measured fastest here (EmbedLayerNormalization, MatMul, MultiHeadAttention,
BiasGelu, plain Add + LayerNormalization), followed by mean pooling and L2 normalisation,
so it maps (input_ids, attention_mask) straight to sentence vectors.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build_model", "load_safetensors", "quantize_model"]

_OPSET = 18
_MS = "com.microsoft"
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}
Weights = dict[str, NDArray[Any]]


def load_safetensors(path: Path) -> Weights:
    """Read every tensor of a safetensors file into numpy arrays (fp32 for floats)."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors: Weights = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]])
        raw = np.frombuffer(
            data, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start
        ).reshape(info["shape"])
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = raw.astype(np.float32) if info["dtype"] == "F16" else raw
    return tensors


class _Graph:
    """Accumulates nodes and initialisers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: NDArray[Any]) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(
        self,
        op_type: str,
        inputs: list[str],
        name: str,
        *,
        outputs: int = 1,
        domain: str = "",
        **attrs: Any,
    ) -> list[str]:
        outs = [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs)
        )
        return outs

    def split_first(self, x: str, name: str) -> list[str]:
        """Split [batch, seq, hidden] into position 0 and positions 1.. (seq is dynamic)."""
        return [
            self.op("Slice", [x, "pos_0", "pos_1", "axis_seq"], f"{name}_first")[0],
            self.op("Slice", [x, "pos_1", "pos_end", "axis_seq"], f"{name}_rest")[0],
        ]


def _add_norm(g: _Graph, name: str, x: str, skip: str, params: list[str], eps: float) -> str:
    """LayerNorm(x + bias + skip) from plain operators (see ``DISABLED_FUSIONS`` in local)."""
    bias, gamma, beta = params
    biased = g.op("Add", [x, bias], f"{name}_bias")[0]
    summed = g.op("Add", [biased, skip], f"{name}_residual")[0]
    return g.op("LayerNormalization", [summed, gamma, beta], name, axis=-1, epsilon=eps)[0]


def _layer(
    g: _Graph, w: Weights, i: int, streams: list[str], mask: str, heads: int, eps: float
) -> list[str]:
    """One encoder layer over token streams that are joined only inside attention."""
    p = f"encoder.layer.{i}."

    def dense(name: str, key: str, xs: list[str]) -> list[str]:
        weight = g.const(f"l{i}_{name}_w", w[f"{p}{key}.weight"].T)
        return [g.op("MatMul", [x, weight], f"l{i}_{name}_s{j}")[0] for j, x in enumerate(xs)]

    def params(*keys: str) -> list[str]:
        return [g.const(f"l{i}_{k}", w[f"{p}{k}"]) for k in keys]

    def join(xs: list[str], name: str) -> str:
        return xs[0] if len(xs) == 1 else g.op("Concat", xs, f"l{i}_{name}_join", axis=1)[0]

    names = ("query", "key", "value")
    qkv = [join(dense(n, f"attention.self.{n}", streams), n) for n in names]
    qkv_b = g.const(
        f"l{i}_qkv_b", np.concatenate([w[f"{p}attention.self.{n}.bias"] for n in names])
    )
    ctx = g.op(
        "MultiHeadAttention", [*qkv, qkv_b, mask], f"l{i}_attention", domain=_MS, num_heads=heads
    )[0]
    ctx_streams = g.split_first(ctx, f"l{i}_ctx") if len(streams) > 1 else [ctx]
    out = dense("attn_out", "attention.output.dense", ctx_streams)
    ln1 = params(
        "attention.output.dense.bias",
        "attention.output.LayerNorm.weight",
        "attention.output.LayerNorm.bias",
    )
    h1 = [
        _add_norm(g, f"l{i}_ln1_s{j}", o, h, ln1, eps)
        for j, (o, h) in enumerate(zip(out, streams, strict=True))
    ]
    up = dense("ffn_in", "intermediate.dense", h1)
    (up_b,) = params("intermediate.dense.bias")
    act = [g.op("BiasGelu", [u, up_b], f"l{i}_gelu_s{j}", domain=_MS)[0] for j, u in enumerate(up)]
    down = dense("ffn_out", "output.dense", act)
    ln2 = params("output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias")
    return [
        _add_norm(g, f"l{i}_ln2_s{j}", d, h, ln2, eps)
        for j, (d, h) in enumerate(zip(down, h1, strict=True))
    ]


def build_model(
    weights: Weights, config: dict[str, Any], *, split_first_token: bool = False
) -> onnx.ModelProto:
    """Return the sentence-embedding graph for a BERT encoder's weights and config."""
    # split_first_token runs the [CLS] position as its own stream outside attention: its
    # activations are ~5x larger than any other token's, and in int8 they would set the
    # quantisation range of every token (LoCoMo: mean cosine to fp32 0.993 -> 0.998, top-10
    # neighbour agreement 0.87 -> 0.94).
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    heads = int(config["num_attention_heads"])
    eps = float(config["layer_norm_eps"])
    g = _Graph()
    for key, value in (
        ("axis_seq", 1),
        ("axis_last", -1),
        ("pos_0", 0),
        ("pos_1", 1),
        ("pos_end", 2**62),
    ):
        g.const(key, np.array([value], np.int64))

    ids32 = g.op("Cast", ["input_ids"], "ids_int32", to=TensorProto.INT32)[0]
    mask32 = g.op("Cast", ["attention_mask"], "mask_int32", to=TensorProto.INT32)[0]
    # Single-segment input: token type 0 is folded into the position table (same sum).
    positions = (
        w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    )
    hidden = g.op(
        "EmbedLayerNormalization",
        [
            ids32,
            "",
            g.const("word_embeddings", w["embeddings.word_embeddings.weight"]),
            g.const("position_embeddings", positions),
            "",
            g.const("embeddings_ln_gamma", w["embeddings.LayerNorm.weight"]),
            g.const("embeddings_ln_beta", w["embeddings.LayerNorm.bias"]),
            mask32,
        ],
        "embeddings",
        outputs=2,
        domain=_MS,
        epsilon=eps,
    )[0]
    streams = g.split_first(hidden, "embeddings") if split_first_token else [hidden]
    for i in range(int(config["num_hidden_layers"])):
        streams = _layer(g, w, i, streams, mask32, heads, eps)
    hidden = streams[0] if len(streams) == 1 else g.op("Concat", streams, "join", axis=1)[0]

    # Mean over real tokens, then unit length (sentence-transformers' Pooling + Normalize).
    maskf = g.op("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)[0]
    mask3 = g.op("Unsqueeze", [maskf, "axis_last"], "mask_3d")[0]
    masked = g.op("Mul", [hidden, mask3], "masked")[0]
    summed = g.op("ReduceSum", [masked, "axis_seq"], "token_sum", keepdims=0)[0]
    counts = g.op("ReduceSum", [mask3, "axis_seq"], "token_count", keepdims=0)[0]
    counts = g.op(
        "Max", [counts, g.const("min_count", np.array(1e-9, np.float32))], "token_count_min"
    )[0]
    mean = g.op("Div", [summed, counts], "mean_pool")[0]
    norm = g.op("ReduceL2", [mean, "axis_last"], "l2", keepdims=1)[0]
    norm = g.op("Max", [norm, g.const("min_norm", np.array(1e-12, np.float32))], "l2_min")[0]
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="normalize"))

    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info(
                "sentence_embedding", TensorProto.FLOAT, ["batch", int(config["hidden_size"])]
            )
        ],
        g.inits,
    )
    model = helper.make_model(
        graph,
        producer_name="engram",
        opset_imports=[helper.make_opsetid("", _OPSET), helper.make_opsetid(_MS, 1)],
    )
    model.ir_version = 8
    return model


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Mute the quantiser's root-logger chatter; real warnings still pass."""
    # It logs one INFO line per tensor, and advice to pre-process that this graph needs not.

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def quantize_model(model: onnx.ModelProto, target: Path) -> None:
    """Write an int8 copy of ``model``: per-channel weights, dynamic per-run activations."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantizer():
        quantize_dynamic(
            model,
            target,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            # Shape inference cannot type com.microsoft outputs; all are float.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )

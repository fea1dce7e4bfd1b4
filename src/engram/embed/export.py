"""Build all-MiniLM-L6-v2 as an ONNX graph straight from the packaged safetensors weights.

No torch: ``engram model prepare`` must work on a production install, where only ``onnx``,
``onnxruntime`` and ``numpy`` are present. The graph is a BERT encoder made of ONNX Runtime
CPU kernels that measured fastest here (EmbedLayerNormalization, MatMul, MultiHeadAttention,
BiasGelu, plain Add + LayerNormalization; MatMulInteger for int8), followed by mean pooling
and L2 normalisation, so it maps (input_ids, attention_mask) straight to sentence vectors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build_model", "load_safetensors"]

_OPSET = 21  # QuantizeLinear's output_dtype
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
    """Accumulates nodes and initialisers; ``dense`` emits fp32 or per-token int8 MatMuls."""

    def __init__(self, *, int8: bool) -> None:
        self.int8 = int8
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._quantized: dict[str, tuple[str, str, str | None]] = {}
        self._shapes: set[str] = set()
        if int8:
            for key, value in (
                ("q_zero", np.array(0.0, np.float32)),
                ("q_one", np.array(1.0, np.float32)),
                ("q_eps", np.array(1e-12, np.float32)),
                ("q_255", np.array(255.0, np.float32)),
                ("q_zero_u8", np.array(0, np.uint8)),
            ):
                self.const(key, value)

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

    def dense(
        self,
        x: str,
        weight: NDArray[Any],
        name: str,
        *,
        floor: float | None = None,
    ) -> tuple[str, NDArray[np.float32]]:
        """x @ weight ([in, out]), and a constant the caller must add to it (zeros unless
        int8 with a floor).

        int8 quantises the weights per output column (symmetric) and x per token (row) at
        run time, over the row's own [min, max] (asymmetric, see ``_quantize_rows``). With
        ``floor``, a known lower bound of x (GELU's output), x + floor is quantised over
        [0, max] instead: no per-row zero point to correct for, and the shift comes out of
        the product as the constant -floor * colsum(weight), returned for the caller's bias.
        """
        n_in, n_out = weight.shape
        if not self.int8:
            out = self.op("MatMul", [x, self.const(f"{name}_w", weight)], name)[0]
            return out, np.zeros(n_out, np.float32)
        scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        wq = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        codes, x_scale, x_zero = self._quantize_rows(x, n_in, floor)
        # (codes @ wq) * scale per column, in one kernel.
        acc = self.op(
            "MatMulIntegerToFloat",
            [codes, self.const(f"{name}_wq", wq), "q_one", self.const(f"{name}_ws", scale),
             "q_zero_u8"],
            f"{name}_int",
            domain=_MS,
        )[0]  # fmt: skip
        colsum = (wq.astype(np.float64) * scale).sum(axis=0)
        if x_zero is not None:
            # MatMulInteger takes one zero point per run, not per row: subtract
            # zero_row * colsum as a rank-1 update.
            row = self.const(f"{name}_colsum", colsum.astype(np.float32)[None, :])
            acc = self.op("Gemm", [x_zero, row, acc], f"{name}_centred", alpha=-1.0)[0]
        acc = self.op("Mul", [acc, x_scale], f"{name}_rows")[0]
        out = self.op("Reshape", [acc, self._shape(n_out)], name)[0]
        correction = -(floor or 0.0) * colsum
        return out, correction.astype(np.float32)

    def _shape(self, width: int) -> str:
        """[batch, seq, width], from the run's input shape."""
        name = f"shape_{width}"
        if name not in self._shapes:
            self._shapes.add(name)
            width_const = self.const(f"{name}_w", np.array([width], np.int64))
            self.op("Concat", ["batch_seq_out0", width_const], name, axis=0)
        return f"{name}_out0"

    def _quantize_rows(
        self, x: str, width: int, floor: float | None
    ) -> tuple[str, str, str | None]:
        """uint8 codes of x as [tokens, in]; each row's scale and (float) zero point.

        One range per row, not per run: a text's codes, hence its vector, do not depend on
        the other texts of its batch, and the [CLS] row's large activations set only its own
        range. The range is the row's [min, max] widened to include 0, as ONNX's
        DynamicQuantizeLinear does per tensor; with a floor it is [0, max] of x + floor and
        the zero point is 0 (returned as None).
        """
        key = f"{x}/{floor}"
        if key in self._quantized:
            return self._quantized[key]
        n = f"{x}_q"
        rows_2d = f"rows_{width}"
        if rows_2d not in self._shapes:
            self._shapes.add(rows_2d)
            self.const(rows_2d, np.array([-1, width], np.int64))
        flat = self.op("Reshape", [x, rows_2d], f"{n}_flat")[0]
        hi = self.op("ReduceMax", [flat, "axis_last"], f"{n}_max", keepdims=0)[0]
        if floor is None:
            lo = self.op("ReduceMin", [flat, "axis_last"], f"{n}_min", keepdims=0)[0]
            lo = self.op("Min", [lo, "q_zero"], f"{n}_lo")[0]
            hi = self.op("Max", [hi, "q_zero"], f"{n}_hi")[0]
            span = self.op("Sub", [hi, lo], f"{n}_span")[0]
        else:
            shift = self.const(f"{n}_floor", np.array(floor, np.float32))
            flat = self.op("Add", [flat, shift], f"{n}_shifted")[0]
            span = self.op("Add", [hi, shift], f"{n}_span")[0]
        span = self.op("Max", [span, "q_eps"], f"{n}_span_eps")[0]
        scale = self.op("Div", [span, "q_255"], f"{n}_scale")[0]
        scale_rows = self.op("Unsqueeze", [scale, "axis_last"], f"{n}_scale_rows")[0]
        if floor is None:
            zero = self.op("Neg", [lo], f"{n}_neg_lo")[0]
            zero = self.op("Div", [zero, scale], f"{n}_zero_exact")[0]
            zero = self.op("Round", [zero], f"{n}_zero_float")[0]
            zero_u8 = self.op("Cast", [zero], f"{n}_zero", to=TensorProto.UINT8)[0]
            codes = self.op("QuantizeLinear", [flat, scale, zero_u8], f"{n}_codes", axis=0)[0]
            zero_rows: str | None = self.op("Unsqueeze", [zero, "axis_last"], f"{n}_zero_rows")[0]
        else:
            # The zero point is 0 in every row: QuantizeLinear's default (uint8).
            codes = self.op("QuantizeLinear", [flat, scale], f"{n}_codes", axis=0)[0]
            zero_rows = None
        self._quantized[key] = (codes, scale_rows, zero_rows)
        return self._quantized[key]


def _add_norm(g: _Graph, name: str, x: str, skip: str, params: list[str], eps: float) -> str:
    """LayerNorm(x + bias + skip) from plain operators (see ``DISABLED_FUSIONS`` in local)."""
    bias, gamma, beta = params
    biased = g.op("Add", [x, bias], f"{name}_bias")[0]
    summed = g.op("Add", [biased, skip], f"{name}_residual")[0]
    return g.op("LayerNormalization", [summed, gamma, beta], name, axis=-1, epsilon=eps)[0]


# GELU's smallest output is -0.16997 (at x = -0.7518): its outputs plus this are >= 0.
_GELU_FLOOR = 0.17


def _layer(g: _Graph, w: Weights, i: int, hidden: str, mask: str, heads: int, eps: float) -> str:
    """One encoder layer."""
    p = f"encoder.layer.{i}."

    def dense(
        name: str, key: str, x: str, floor: float | None = None
    ) -> tuple[str, NDArray[np.float32]]:
        """The product and its bias, with the int8 shift's constant folded into the bias."""
        out, correction = g.dense(x, w[f"{p}{key}.weight"].T, f"l{i}_{name}", floor=floor)
        return out, w[f"{p}{key}.bias"] + correction

    def params(*keys: str) -> list[str]:
        return [g.const(f"l{i}_{k}", w[f"{p}{k}"]) for k in keys]

    names = ("query", "key", "value")
    qkv = [dense(n, f"attention.self.{n}", hidden) for n in names]
    qkv_b = g.const(f"l{i}_qkv_b", np.concatenate([b for _, b in qkv]))
    ctx = g.op(
        "MultiHeadAttention",
        [*(q for q, _ in qkv), qkv_b, mask],
        f"l{i}_attention",
        domain=_MS,
        num_heads=heads,
    )[0]
    out, out_b = dense("attn_out", "attention.output.dense", ctx)
    ln1 = [g.const(f"l{i}_attn_out_b", out_b)]
    ln1 += params("attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias")
    h1 = _add_norm(g, f"l{i}_ln1", out, hidden, ln1, eps)
    up, up_b = dense("ffn_in", "intermediate.dense", h1)
    act = g.op("BiasGelu", [up, g.const(f"l{i}_ffn_in_b", up_b)], f"l{i}_gelu", domain=_MS)[0]
    down, down_b = dense("ffn_out", "output.dense", act, _GELU_FLOOR)
    ln2 = [g.const(f"l{i}_ffn_out_b", down_b)]
    ln2 += params("output.LayerNorm.weight", "output.LayerNorm.bias")
    return _add_norm(g, f"l{i}_ln2", down, h1, ln2, eps)


def build_model(weights: Weights, config: dict[str, Any], *, int8: bool = False) -> onnx.ModelProto:
    """Return the sentence-embedding graph for a BERT encoder's weights and config."""
    # int8 quantises each MatMul's weights per output column (symmetric) and its activations
    # per token (asymmetric, at run time). Per token, not per run as ONNX Runtime's
    # quantize_dynamic does: then a text's vector is the same whatever texts share its run,
    # so texts can be batched (LoCoMo turns: cosine to fp32 0.998 mean, 0.992 worst).
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    heads = int(config["num_attention_heads"])
    eps = float(config["layer_norm_eps"])
    g = _Graph(int8=int8)
    for key, value in (("axis_seq", 1), ("axis_last", -1)):
        g.const(key, np.array([value], np.int64))
    if int8:
        g.op("Shape", ["input_ids"], "batch_seq")

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
    for i in range(int(config["num_hidden_layers"])):
        hidden = _layer(g, w, i, hidden, mask32, heads, eps)

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
    model.ir_version = 10
    return model

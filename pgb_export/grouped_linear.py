"""One linear layer of the export graph: dense, or grouped as split-and-concat (or batched)
MatMuls, with its permutations absorbed wherever that is exact.

Orders: an activation's last axis holds features in some order, given as an array of
original feature indices per position (None = original order). A dense weight absorbs any
input order (rows) and produces any output order (columns) for free. A grouped weight needs
each input chunk i to hold the rows of block i (in any order inside the chunk) and produces
the columns of block i in chunk i (in any order inside the chunk); only when the order at
hand or the order wanted does not match chunk by chunk is a permutation of the activation
emitted, and then exactly one, with the two index maps composed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pruning.plan import MatrixPlan

from .graph import Graph

GROUPED_FORMS = ("split", "batched")
PERMUTE_FORMS = ("transpose", "gather")


@dataclass(frozen=True)
class LinearOptions:
    # split: G MatMuls on slices of the input, concatenated (what users read in Netron);
    # batched: one MatMul on [G, M/G, N/G] weights.
    grouped_form: str = "split"
    # How a permutation of the last axis is emitted. ONNX Runtime's Gather on the last axis
    # copies one element at a time; moving the axis to the front makes each index a
    # contiguous row copy, and measured faster even with the two transposes (BENCHMARKS.md).
    permute_form: str = "transpose"
    # Emit each grouped linear as one pgb::GroupedLinear node (plugins/: gather and scatter
    # fused into the kernel, so no permutation is ever materialised). TensorRT only.
    plugin: bool = False
    # Dynamic INT8 for ONNX Runtime on CPU: each activation quantized once at run time
    # (DynamicQuantizeLinear: uint8, per tensor), weights symmetric per-output-channel int8
    # stored for the kept blocks only, MatMulInteger per block, one dequantizing Mul.
    int8: bool = False


PLUGIN_DOMAIN = "pgb"
PLUGIN_OP = "GroupedLinear"


def _plugin_linear(g: Graph, x: str, x_order: np.ndarray, w: np.ndarray, b: np.ndarray,
                   mp: MatrixPlan, want: np.ndarray | None) -> tuple[str, np.ndarray]:
    """pgb::GroupedLinear(x, blocks, rows, cols, bias): y[..., cols[g, j]] = sum_k
    x[..., rows[g, k]] blocks[g, k, j] + bias[cols[g, j]]; rows/cols are positions in x/y."""
    from onnx import helper
    pr, pc = np.asarray(mp.row_perm), np.asarray(mp.col_perm)
    out = np.arange(w.shape[1]) if want is None else np.asarray(want)
    groups = mp.groups
    blocks = _stack_blocks(w, pr.reshape(groups, -1), pc.reshape(groups, -1))
    inputs = [x, g.const(blocks, "blocks"), g.const(np.argsort(x_order)[pr].astype(np.int32), "rows"),
              g.const(np.argsort(out)[pc].astype(np.int32), "cols"), g.const(b[out], "bias")]
    y = g.name(PLUGIN_OP)
    g.nodes.append(helper.make_node(PLUGIN_OP, inputs, [y], name=y, domain=PLUGIN_DOMAIN, groups=groups,
                                    plugin_namespace=PLUGIN_DOMAIN, plugin_version="1"))
    return y, out


def permute_last(g: Graph, x: str, index: np.ndarray, form: str) -> str:
    """x[..., index] for a rank-3 activation (batch, sequence, features)."""
    idx = g.const(np.asarray(index, dtype=np.int64), "perm_index")
    if form == "gather":
        return g.op("Gather", [x, idx], "Gather", axis=2)
    t = g.op("Transpose", [x], "Transpose", perm=[2, 0, 1])
    t = g.op("Gather", [t, idx], "Gather", axis=0)
    return g.op("Transpose", [t], "Transpose", perm=[1, 2, 0])


def _chunk_aligned(order: np.ndarray, chunks: np.ndarray) -> bool:
    size = chunks.shape[1]
    return all(set(order[i * size:(i + 1) * size].tolist()) == set(c.tolist()) for i, c in enumerate(chunks))


def _stack_blocks(w: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(G, M/G, N/G): block g is W's rows rows[g] and columns cols[g], in those orders."""
    return np.stack([w[r][:, c] for r, c in zip(rows, cols)])


def _grouped_matmul(g: Graph, x: str, blocks: np.ndarray, form: str, zero_point: str | None = None) -> str:
    """x times the block-diagonal weight; with zero_point, x is uint8 and blocks int8
    (MatMulInteger, int32 out)."""
    groups, br, bc = blocks.shape
    op = "MatMul" if zero_point is None else "MatMulInteger"
    extra = [] if zero_point is None else [zero_point]
    if form == "batched":
        t = g.op("Reshape", [x, g.const(np.array([0, 0, groups, br], np.int64), "shape")], "Reshape")
        t = g.op("Transpose", [t], "Transpose", perm=[2, 0, 1, 3])  # (G, B, S, M/G)
        t = g.op(op, [t, g.const(blocks[:, None], "blocks"), *extra], op)  # (G, B, S, N/G)
        t = g.op("Transpose", [t], "Transpose", perm=[1, 2, 0, 3])
        return g.op("Reshape", [t, g.const(np.array([0, 0, groups * bc], np.int64), "shape")], "Reshape")
    split = g.const(np.full(groups, br, np.int64), "split")
    parts = g.op_multi("Split", [x, split], groups, "Split", axis=-1)
    outs = [g.op(op, [p, g.const(blocks[i], "block"), *extra], op) for i, p in enumerate(parts)]
    return g.op("Concat", outs, "Concat", axis=-1)


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: (W_q, scale) with W ~ W_q * scale, |W_q| <= 127.
    Columns of a block-diagonal weight are non-zero inside their block only, so the scale of
    a column is its block's."""
    scale = np.abs(w).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def _quantized(g: Graph, x: str) -> tuple[str, str, str]:
    """(x_q, scale, zero_point) of an activation, made once however many linears read it.
    Permutations commute with this per-tensor quantization, so they act on x_q."""
    if x not in g.quantized:
        g.quantized[x] = tuple(g.op_multi("DynamicQuantizeLinear", [x], 3, "DynamicQuantizeLinear"))
    return g.quantized[x]


def _dequantized(g: Graph, y: str, x_scale: str, w_scale: np.ndarray, b: np.ndarray) -> str:
    """int32 accumulators -> float: y * (x_scale * w_scale) + b, the pattern ORT fuses into
    MatMulIntegerToFloat."""
    scale = g.op("Mul", [x_scale, g.const(w_scale, "weight_scale", np.float32)], "Mul")
    y = g.op("Mul", [g.op("Cast", [y], "Cast", to=1), scale], "Mul")  # to FLOAT
    return g.op("Add", [y, g.const(b, "bias")], "Add")


def linear(g: Graph, x: str, x_order: np.ndarray | None, w: np.ndarray, b: np.ndarray,
           mp: MatrixPlan, want: np.ndarray | None, opts: LinearOptions) -> tuple[str, np.ndarray]:
    """Emit y = x W* + b. w is the (M, N) pruned weight in original order; want is the
    output order the consumer needs (None: any). Returns (output, its order)."""
    m, n = w.shape
    x_order = np.arange(m) if x_order is None else np.asarray(x_order)
    scale = zero = None
    if opts.int8:
        x, scale, zero = _quantized(g, x)
    if mp.groups == 1:
        out = np.arange(n) if want is None else np.asarray(want)
        if opts.int8:
            wq, ws = quantize_weight(w[x_order][:, out])
            return _dequantized(g, g.op("MatMulInteger", [x, g.const(wq, "weight"), zero], "MatMulInteger"),
                                scale, ws, b[out]), out
        y = g.op("MatMul", [x, g.const(w[x_order][:, out], "weight")], "MatMul")
        return g.op("Add", [y, g.const(b[out], "bias")], "Add"), out
    if opts.plugin:
        return _plugin_linear(g, x, x_order, w, b, mp, want)
    groups = mp.groups
    rchunks = np.asarray(mp.row_perm).reshape(groups, -1)
    cchunks = np.asarray(mp.col_perm).reshape(groups, -1)
    if _chunk_aligned(x_order, rchunks):
        rows = x_order.reshape(groups, -1)
    else:
        rows = rchunks
        x = permute_last(g, x, np.argsort(x_order)[rchunks.reshape(-1)], opts.permute_form)
    aligned_out = want is not None and _chunk_aligned(np.asarray(want), cchunks)
    cols = np.asarray(want).reshape(groups, -1) if aligned_out else cchunks
    natural = cols.reshape(-1)
    if opts.int8:
        wq, ws = quantize_weight(w[:, natural])  # per output channel, in the output's order
        bq = np.stack([wq[r][:, i * cols.shape[1]:(i + 1) * cols.shape[1]] for i, r in enumerate(rows)])
        y = _dequantized(g, _grouped_matmul(g, x, bq, opts.grouped_form, zero), scale, ws, b[natural])
    else:
        y = _grouped_matmul(g, x, _stack_blocks(w, rows, cols), opts.grouped_form)
        y = g.op("Add", [y, g.const(b[natural], "bias")], "Add")
    if want is None or aligned_out:
        return y, natural
    return permute_last(g, y, np.argsort(natural)[np.asarray(want)], opts.permute_form), np.asarray(want)

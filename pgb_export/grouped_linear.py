"""One linear layer of the export graph: dense, or grouped as split-and-concat (or batched)
MatMuls, with its permutations absorbed wherever that is exact.

Orders: an activation's last axis holds features in some order, given as an array of
original feature indices per position (None = original order). A dense weight absorbs any
input order (rows) and produces any output order (columns) for free. A grouped weight needs
each input chunk i to hold the rows of block i (in any order inside the chunk) and produces
the columns of block i in chunk i (in any order inside the chunk); only when the order at
hand or the order wanted does not match chunk by chunk is a permutation of the activation
emitted, and then exactly one, with the two index maps composed.

Between two grouped linears (FFN1 -> GELU -> FFN2) no whole-activation permutation is
needed: the activation travels as parts (one tensor per block, `Part`), the producer orders
each block's columns by the consumer chunk they are bound for (`Chunks`), and `exchange`
regroups them with contiguous Split and Concat copies, at most G_1 x G_2 pieces.
"""
from __future__ import annotations

from collections.abc import Mapping
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
    # (DynamicQuantizeLinear: uint8, per tensor), weights symmetric per-output-channel int8 of
    # 7 bits (DYNAMIC_QMAX) stored for the kept blocks only, MatMulInteger per block, one dequantizing Mul.
    int8: bool = False
    # Explicit INT8 for TensorRT (QDQ): matrix name -> its input's calibrated range amax.
    # Each named linear's MatMuls read their input through QuantizeLinear -> DequantizeLinear
    # (symmetric int8, per tensor, scale amax / 127) and their weight through DequantizeLinear
    # (int8, symmetric per output channel); unnamed linears and everything else stay float.
    # Standard ONNX, run as is by ONNX Runtime for the parity check.
    qdq: Mapping[str, float] | None = None
    # Attention as ONNX Runtime's fused com.microsoft.MultiHeadAttention (a contrib op): for
    # graphs only ONNX Runtime runs (the dynamic INT8 one); the TensorRT-facing graphs stay
    # standard ONNX. Same logits; faster at batch 32, not always at batch 1 (BENCHMARKS.md).
    ort_attention: bool = False


PLUGIN_DOMAIN = "pgb"
PLUGIN_OP = "GroupedLinear"
# Name bases the census counts by: the index of a whole-activation permutation, and the
# Concat that assembles one consumer chunk in an exchange.
PERMUTATION_INDEX = "perm_index"
EXCHANGE_CONCAT = "ExchangeConcat"


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
    """x[..., index] for a rank-3 activation (batch, sequence, features), made once however
    many readers ask for the same one (W_Q, W_K, W_V of a tied plan). In the transpose form
    the features-first copy of x is made once and shared by every permutation of x (Q, K and
    V read the same residual tensor)."""
    index = np.asarray(index, dtype=np.int64)

    def make() -> str:
        idx = g.const(index, PERMUTATION_INDEX)
        if form == "gather":
            return g.op("Gather", [x, idx], "Gather", axis=2)
        features_first = g.once(("features first", x), lambda: g.op("Transpose", [x], "Transpose", perm=[2, 0, 1]))
        return g.op("Transpose", [g.op("Gather", [features_first, idx], "Gather", axis=0)], "Transpose",
                    perm=[1, 2, 0])
    return g.once(("permute", x, form, index.tobytes()), make)


@dataclass(frozen=True)
class Part:
    """One tensor of an activation split along its last axis, with the original feature
    index at each of its positions."""

    name: str
    order: np.ndarray
    scale: str | None = None  # int8: name is uint8 data quantized with this scale and zero point
    zero: str | None = None


@dataclass(frozen=True)
class Chunks:
    """What a grouped consumer reads: part i must hold exactly the features in sets[i], in
    any order. Asked of a producer instead of one exact order, it lets the producer hand its
    blocks' outputs over in pieces (`exchange`) rather than permute the whole activation."""

    sets: np.ndarray  # (G, features / G)


# An exchange copies contiguous runs (Split + Concat); a run this long or longer per piece on
# average beats the whole-activation permutation (BENCHMARKS.md, "Fewer permutations").
MIN_RUN = 8


def _runs(parts: list[Part], sets: np.ndarray) -> int:
    """How many contiguous pieces `exchange` would cut `parts` into for `sets`."""
    dest = _destinations(sets)
    return sum(1 + int(np.count_nonzero(np.diff(dest[p.order]))) for p in parts)


def _destinations(sets: np.ndarray) -> np.ndarray:
    dest = np.empty(sets.size, dtype=np.int64)
    for j, s in enumerate(sets):
        dest[s] = j
    return dest


def exchange(g: Graph, parts: list[Part], sets: np.ndarray) -> list[Part]:
    """The same activation as one part per set: each part cut into its runs of features
    bound for the same set, each set's runs concatenated in the parts' order. Exact for any
    parts; cheap when runs are long, which a producer that orders each block's columns by
    destination guarantees (at most G_in x G_out pieces)."""
    dest = _destinations(sets)
    pieces: list[list[tuple[str, np.ndarray]]] = [[] for _ in sets]
    for p in parts:
        d = dest[p.order]
        bounds = [0, *(np.flatnonzero(np.diff(d)) + 1).tolist(), len(d)]
        names = [p.name] if len(bounds) == 2 else g.op_multi(
            "Split", [p.name, g.const(np.diff(bounds).astype(np.int64), "split")], len(bounds) - 1,
            "ExchangeSplit", axis=-1)
        for name, a, z in zip(names, bounds, bounds[1:]):
            pieces[d[a]].append((name, p.order[a:z]))
    out = []
    for runs in pieces:
        names, orders = zip(*runs)
        name = names[0] if len(names) == 1 else g.op("Concat", list(names), EXCHANGE_CONCAT, axis=-1)
        out.append(Part(name, np.concatenate(orders)))
    return out


def joined(g: Graph, parts: list[Part]) -> Part:
    """The activation as one tensor."""
    if len(parts) == 1:
        return parts[0]
    return Part(g.op("Concat", [p.name for p in parts], "Concat", axis=-1), np.concatenate([p.order for p in parts]))


def _chunk_aligned(order: np.ndarray, chunks: np.ndarray) -> bool:
    size = chunks.shape[1]
    return all(set(order[i * size:(i + 1) * size].tolist()) == set(c.tolist()) for i, c in enumerate(chunks))


def same_sets(sets: list[np.ndarray], chunks: np.ndarray) -> bool:
    """As many feature sets as chunks, each holding the features of its chunk in any order."""
    return len(sets) == len(chunks) and all(set(s.tolist()) == set(c.tolist()) for s, c in zip(sets, chunks))


def _parts_aligned(parts: list[Part], chunks: np.ndarray) -> bool:
    return same_sets([p.order for p in parts], chunks)


def _stack_blocks(w: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(G, M/G, N/G): block g is W's rows rows[g] and columns cols[g], in those orders."""
    return np.stack([w[r][:, c] for r, c in zip(rows, cols)])


def _aligned(g: Graph, x: list[Part], rchunks: np.ndarray, opts: LinearOptions) -> list[Part]:
    """The input chunk-aligned with the blocks' rows: as given, exchanged when its parts'
    runs are long enough, else one tensor, permuted if it is not aligned already."""
    if _parts_aligned(x, rchunks):
        return x
    if len(x) > 1 and rchunks.size / _runs(x, rchunks) >= MIN_RUN:
        return exchange(g, x, rchunks)
    whole = _quantize(g, joined(g, x)) if opts.int8 else joined(g, x)
    if _chunk_aligned(whole.order, rchunks):
        return [whole]
    # Each chunk in ascending feature order: readers with the same chunk sets (a tied Q/K/V)
    # then ask for the same permutation and share it; a block absorbs any order of its rows.
    order = np.sort(rchunks, axis=1).reshape(-1)
    return [Part(permute_last(g, whole.name, np.argsort(whole.order)[order], opts.permute_form), order,
                 whole.scale, whole.zero)]


def _block_inputs(g: Graph, x: list[Part], rchunks: np.ndarray, opts: LinearOptions) -> list[Part]:
    """One input part per block, holding exactly that block's rows."""
    parts = _aligned(g, x, rchunks, opts)
    if len(parts) == len(rchunks):
        return parts
    (whole,), (groups, size) = parts, rchunks.shape
    names = g.once(("split", whole.name, groups), lambda: g.op_multi(
        "Split", [whole.name, g.const(np.full(groups, size, np.int64), "split")], groups, "Split", axis=-1))
    return [Part(n, whole.order[i * size:(i + 1) * size], whole.scale, whole.zero) for i, n in enumerate(names)]


def _batched_matmul(g: Graph, x: str, blocks: np.ndarray, zero_point: str | None = None) -> str:
    """x (chunk-aligned) times the block-diagonal weight as one MatMul on [G, M/G, N/G];
    with zero_point, x is uint8 and blocks int8 (MatMulInteger, int32 out)."""
    groups, br, bc = blocks.shape
    op = "MatMul" if zero_point is None else "MatMulInteger"
    extra = [] if zero_point is None else [zero_point]
    t = g.op("Reshape", [x, g.const(np.array([0, 0, groups, br], np.int64), "shape")], "Reshape")
    t = g.op("Transpose", [t], "Transpose", perm=[2, 0, 1, 3])  # (G, B, S, M/G)
    t = g.op(op, [t, g.const(blocks[:, None], "blocks"), *extra], op)  # (G, B, S, N/G)
    t = g.op("Transpose", [t], "Transpose", perm=[1, 2, 0, 3])
    return g.op("Reshape", [t, g.const(np.array([0, 0, groups * bc], np.int64), "shape")], "Reshape")


# The dynamic INT8 graph's weights use 7 bits. On x86 CPUs without VNNI (AVX2, AVX-512F),
# ONNX Runtime's uint8 x int8 MatMulInteger adds products in pairs into int16 and saturates:
# 255 * 127 * 2 > 32767. With |W_q| <= 63 every pair fits (255 * 63 * 2 = 32130), so the int32
# sums are exact on every CPU, at half the weight resolution (measured: BENCHMARKS.md, "INT8
# on CPUs without VNNI"). The QDQ graph is TensorRT's, whose int8 kernels keep 8 bits.
DYNAMIC_QMAX = 63
QDQ_QMAX = 127


def quantize_weight(w: np.ndarray, qmax: int = QDQ_QMAX) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: (W_q, scale) with W ~ W_q * scale, |W_q| <= qmax.
    Columns of a block-diagonal weight are non-zero inside their block only, so the scale of
    a column is its block's."""
    scale = np.abs(w).max(axis=0) / qmax
    scale[scale == 0] = 1.0
    return np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8), scale


def _quantized(g: Graph, x: str) -> tuple[str, str, str]:
    """(x_q, scale, zero_point) of an activation, made once however many linears read it.
    Permutations commute with this per-tensor quantization, so they act on x_q."""
    return g.once(("quantize", x), lambda: tuple(g.op_multi("DynamicQuantizeLinear", [x], 3, "DynamicQuantizeLinear")))


def _dequantized(g: Graph, y: str, x_scale: str, w_scale: np.ndarray, b: np.ndarray) -> str:
    """int32 accumulators -> float: y * (x_scale * w_scale) + b, the pattern ORT fuses into
    MatMulIntegerToFloat."""
    scale = g.op("Mul", [x_scale, g.const(w_scale, "weight_scale", np.float32)], "Mul")
    y = g.op("Mul", [g.op("Cast", [y], "Cast", to=1), scale], "Mul")  # to FLOAT
    return g.op("Add", [y, g.const(b, "bias")], "Add")


def _quantize(g: Graph, p: Part) -> Part:
    if p.scale is not None:
        return p
    xq, scale, zero = _quantized(g, p.name)
    return Part(xq, p.order, scale, zero)


def _fake_quantized(g: Graph, x: str, amax: float) -> str:
    """x through QuantizeLinear and DequantizeLinear: symmetric int8, zero point 0 (the only
    one TensorRT takes)."""
    scale = g.const(np.array(max(amax, 1e-12) / 127.0), "act_scale", np.float32)
    zero = g.const(np.array(0, np.int8), "act_zero")
    return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, scale, zero], "QuantizeLinear"), scale, zero],
                "DequantizeLinear")


def _product(g: Graph, x: Part, w: np.ndarray, b: np.ndarray, opts: LinearOptions, block: str,
             amax: float | None = None) -> str:
    """x times w (rows in x's order) plus b: MatMul and Add; with int8 MatMulInteger on the
    quantized x and the dequantizing Mul; with QDQ (amax: x's calibrated range) a MatMul of
    fake-quantized input and weight (amax None: a linear the QDQ graph keeps in floating point)."""
    if opts.qdq is not None and amax is not None:
        wq, ws = quantize_weight(w)
        wd = g.op("DequantizeLinear", [g.const(wq, block), g.const(ws, "weight_scale", np.float32),
                                       g.const(np.zeros(len(ws), np.int8), "weight_zero")], "DequantizeLinear", axis=1)
        y = g.op("MatMul", [_fake_quantized(g, x.name, amax), wd], "MatMul")
        return g.op("Add", [y, g.const(b, "bias")], "Add")
    if not opts.int8:
        return g.op("Add", [g.op("MatMul", [x.name, g.const(w, block)], "MatMul"), g.const(b, "bias")], "Add")
    x = _quantize(g, x)
    wq, ws = quantize_weight(w, DYNAMIC_QMAX)
    return _dequantized(g, g.op("MatMulInteger", [x.name, g.const(wq, block), x.zero], "MatMulInteger"),
                        x.scale, ws, b)


def linear(g: Graph, x: list[Part], w: np.ndarray, b: np.ndarray, mp: MatrixPlan,
           want: np.ndarray | Chunks | None, opts: LinearOptions) -> list[Part]:
    """Emit y = x W* + b. w is the (M, N) pruned weight in original order; x the input as
    parts; want what the consumer needs: an exact output order, the Chunks of a grouped
    consumer, or None (any order). Returns the output as parts: one, or, for Chunks asked of
    a grouped linear, one per block with its columns ordered by destination chunk.

    With int8 a one-tensor input is quantized before it is permuted or split (so once,
    however many linears read it, and its copies move uint8); parts are quantized each."""
    n = w.shape[1]
    amax = None if opts.qdq is None else opts.qdq.get(mp.name)
    if opts.int8 and len(x) == 1:
        x = [_quantize(g, x[0])]
    if mp.groups == 1:
        whole = joined(g, x)
        out = (np.arange(n) if want is None else want.sets.reshape(-1) if isinstance(want, Chunks)
               else np.asarray(want))
        return [Part(_product(g, whole, w[whole.order][:, out], b[out], opts, "weight", amax), out)]
    if opts.plugin:
        whole = joined(g, x)
        return [Part(*_plugin_linear(g, whole.name, whole.order, w, b, mp, None if isinstance(want, Chunks) else want))]
    groups = mp.groups
    rchunks = np.asarray(mp.row_perm).reshape(groups, -1)
    cchunks = np.asarray(mp.col_perm).reshape(groups, -1)
    exact = want is not None and not isinstance(want, Chunks)
    aligned_out = exact and _chunk_aligned(np.asarray(want), cchunks)
    if aligned_out:
        cols = np.asarray(want).reshape(groups, -1)
    elif isinstance(want, Chunks):  # runs of features bound for the same consumer chunk
        dest = _destinations(want.sets)
        cols = np.stack([c[np.argsort(dest[c], kind="stable")] for c in cchunks])
    else:
        cols = cchunks
    natural = cols.reshape(-1)
    if opts.grouped_form == "batched" and opts.qdq is None:  # per-block weight scales need the split form
        whole = joined(g, _aligned(g, x, rchunks, opts))
        rows = whole.order.reshape(groups, -1)
        if opts.int8:
            whole = _quantize(g, whole)
            wq, ws = quantize_weight(w[:, natural], DYNAMIC_QMAX)  # per output channel, in the output's order
            bq = np.stack([wq[r][:, i * cols.shape[1]:(i + 1) * cols.shape[1]] for i, r in enumerate(rows)])
            y = _dequantized(g, _batched_matmul(g, whole.name, bq, whole.zero), whole.scale, ws, b[natural])
        else:
            y = g.op("Add", [_batched_matmul(g, whole.name, _stack_blocks(w, rows, cols)),
                             g.const(b[natural], "bias")], "Add")
        parts = [Part(y, natural)]
    else:
        parts = [Part(_product(g, p, w[p.order][:, c], b[c], opts, "block", amax), c)
                 for p, c in zip(_block_inputs(g, x, rchunks, opts), cols)]
    if isinstance(want, Chunks):
        return parts
    y = joined(g, parts)
    if want is None or aligned_out:
        return [y]
    return [Part(permute_last(g, y.name, np.argsort(y.order)[np.asarray(want)], opts.permute_form), np.asarray(want))]

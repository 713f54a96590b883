"""A pruned (or dense) BERT-family model (BERT, RoBERTa, DistilBERT: the family's paths and
embeddings come from pruning.families) with its task head (sequence classification or
extractive question answering: pruning.heads, one emitter each) as an ONNX graph.

The graph is written op by op from the weights, so that every grouped linear becomes a
grouped MatMul subgraph and every exact simplification of PGB.md section 8 is made:
- dropped W_V or W_O: the attention sub-layer is a constant (softmax rows sum to one), so
  the whole sub-layer becomes one Add of that constant before its LayerNorm;
- dropped W_1 or W_2: likewise for the FFN (act(b_1) W_2 + b_2, or b_2; the activation from
  `activations`);
- dropped W_Q or W_K: the projection is its bias, a constant broadcast in the score MatMul;
- 1/sqrt(d_head) is folded into W_Q and b_Q;
- heads with all-zero W_O rows and FFN neurons with a zero W_2 row are left out of every
  linear of their sub-layer (`slicing`);
- permutations are absorbed by `grouped_linear.linear` (biases, FFN1 -> activation -> FFN2, and
  dense neighbours), and the ones left are counted in the census.
Constants are folded in float64 from the pruned weights, then stored in float32.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper
from torch import nn

from pruning import bert
from pruning.families import Family, UnsupportedFamily, family, layer_norm_eps
from pruning.heads import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, Head, head_named
from pruning.plan import MatrixPlan, Plan

from .activations import ACTIVATIONS, Activation
from .bert_io import BERT_IO
from .graph import FLOAT, Graph, tensor_type
from .grouped_linear import QDQ_QMAX, Chunks, LinearOptions, Part, linear, quantize_weight
from .slicing import layer_slices, sliced


class ExportError(ValueError):
    """The model cannot be exported as asked."""


def dense_plan(model: nn.Module) -> Plan:
    """The plan of an unpruned model: every matrix dense, identity permutations."""
    return Plan([MatrixPlan(r.name, r.layer, r.kind, r.shape, 1, list(range(r.shape[0])),
                            list(range(r.shape[1]))) for r in bert.matrices(model)], {"method": "dense"})


class _Weights:
    """float64 numpy views of the model's parameters, W in (in, out) convention."""

    def __init__(self, model: nn.Module):
        self.sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}

    def __call__(self, name: str) -> np.ndarray:
        return self.sd[name]

    def linear(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.sd[f"{name}.weight"].T, self.sd[f"{name}.bias"]


def _head_linears(model: nn.Module, f: Family, head: Head) -> list[str]:
    """The head's linear layers, paths from the model root, in order."""
    if head is QUESTION_ANSWERING:
        return [f.question_answering]
    return [path.format(base=model.base_model_prefix) for path, _ in f.classifier]


def unsupported_activation(config) -> str | None:
    """Why the graph cannot be written for this config's FFN activation, or None (pgb-prune asks
    before pruning, so that a user learns it before the minutes of work, not after)."""
    act = getattr(config, family(config).activation_attr)
    if isinstance(act, str) and act in ACTIVATIONS:
        return None
    return f"unsupported activation {act!r:.40}; supported: {', '.join(ACTIVATIONS)}"


def _check_supported(model: nn.Module) -> tuple[Family, Activation]:
    cfg = model.config
    try:
        f = family(model)
    except UnsupportedFamily as e:
        raise ExportError(str(e)) from None
    why = unsupported_activation(cfg)
    if why:
        raise ExportError(why)
    activation = ACTIVATIONS[getattr(cfg, f.activation_attr)]
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        raise ExportError("only absolute position embeddings are supported")
    head = head_named(model)
    for path in _head_linears(model, f, head):
        try:
            ok = isinstance(model.get_submodule(path), nn.Linear)
        except AttributeError:
            ok = False
        if not ok:
            raise ExportError(f"only {f.name}'s standard {head.name} head is exported; this model has no linear {path}")
    return f, activation


def _layer_norm(g: Graph, x: str, w: _Weights, prefix: str, eps: float) -> str:
    return g.op("LayerNormalization", [x, g.const(w(f"{prefix}.weight"), "ln_gamma"),
                                       g.const(w(f"{prefix}.bias"), "ln_beta")],
                "LayerNorm", axis=-1, epsilon=eps)


def _heads(g: Graph, y: str, heads: int, dh: int, perm: list[int]) -> str:
    t = g.op("Reshape", [y, g.const(np.array([0, 0, heads, dh], np.int64), "shape")], "Reshape")
    return g.op("Transpose", [t], "Transpose", perm=perm)


def _attention(g, x, mask, w, plans, layer_prefix, cfg, opts, f: Family, keep: np.ndarray | None) -> str:
    """keep: the attention features (whole heads) to compute, None for all (slicing)."""
    d = cfg.hidden_size
    dh = d // cfg.num_attention_heads
    scale = 1.0 / math.sqrt(dh)
    (q, wq, bq), (k, wk, bk), (v, wv, bv), (o, wo, bo) = (sliced(mp, *w.linear(mp.name), keep) for mp in plans)
    ln, eps = f"{layer_prefix}.{f.attention_norm}", layer_norm_eps(f, cfg)
    if v.groups == 0 or o.groups == 0 or wo.shape[0] == 0:  # the last: no head left
        const = bo + (bv @ wo if o.groups else 0.0)
        return _layer_norm(g, g.op("Add", [x, g.const(const, "attention_constant")], "Add"), w, ln, eps)
    width = wo.shape[0]
    heads = width // dh
    x = [Part(x, np.arange(d))]

    def project(w_, b_, mp):
        return linear(g, x, w_, b_, mp, np.arange(width), opts)[0].name

    if opts.ort_attention and q.groups and k.groups:
        ctx = _ort_attention(g, project(wq * scale, bq * scale, q), project(wk, bk, k), project(wv, bv, v),
                             heads, f)
    else:
        if q.groups:
            qh = _heads(g, project(wq * scale, bq * scale, q), heads, dh, [0, 2, 1, 3])
        else:  # (1, H, 1, dh): the same query for every position
            qh = g.const((bq * scale).reshape(1, heads, 1, dh), "query_constant")
        if k.groups:
            kh = _heads(g, project(wk, bk, k), heads, dh, [0, 2, 3, 1])
        else:  # (1, H, dh, 1)
            kh = g.const(bk.reshape(1, heads, dh, 1), "key_constant")
        vh = _heads(g, project(wv, bv, v), heads, dh, [0, 2, 1, 3])
        scores = g.op("Add", [g.op("MatMul", [qh, kh], "MatMul"), mask], "Add")
        probs = g.op("Softmax", [scores], "Softmax", axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, vh], "MatMul")], "Transpose", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, g.const(np.array([0, 0, width], np.int64), "shape")], "Reshape")
    out = linear(g, [Part(ctx, np.arange(width))], wo, bo, o, np.arange(d), opts)[0].name
    return _layer_norm(g, g.op("Add", [out, x[0].name], "Add"), w, ln, eps)


def _ort_attention(g: Graph, q: str, k: str, v: str, heads: int, f: Family) -> str:
    """softmax(q k^T + padding mask) v per head, as one com.microsoft.MultiHeadAttention node
    (q already scaled, so scale 1); its key padding mask is the attention mask as int32, made
    once per graph."""
    padding = g.once(("key padding mask",), lambda: g.op("Cast", [f.inputs[1]], "Cast", to=onnx.TensorProto.INT32))
    out = g.name("MultiHeadAttention")
    g.nodes.append(helper.make_node("MultiHeadAttention", [q, k, v, "", padding], [out], name=out,
                                    domain="com.microsoft", num_heads=heads, scale=1.0))
    return out


def _ffn(g, x, w, plans, layer_prefix, cfg, opts, f: Family, act: Activation, keep: np.ndarray | None) -> str:
    """keep: the FFN neurons to compute, None for all (slicing)."""
    (f1, w1, b1), (f2, w2, b2) = (sliced(mp, *w.linear(mp.name), keep) for mp in plans)
    ln, eps = f"{layer_prefix}.{f.ffn_norm}", layer_norm_eps(f, cfg)
    if f1.groups == 0 or f2.groups == 0 or w2.shape[0] == 0:  # the last: no neuron left
        const = b2 + (act.value(b1) @ w2 if f2.groups else 0.0)
        return _layer_norm(g, g.op("Add", [x, g.const(const, "ffn_constant")], "Add"), w, ln, eps)
    # FFN2 grouped: FFN1 delivers its output in FFN2's row chunks (the activation is elementwise): a
    # dense FFN1 as one tensor in that order, a grouped one as its blocks' outputs, regrouped
    # by `exchange`; FFN2 dense: FFN1 keeps its natural order and FFN2's rows absorb it.
    want = Chunks(np.asarray(f2.row_perm).reshape(f2.groups, -1)) if f2.groups > 1 else None
    h = [Part(act.emit(g, p.name), p.order) for p in linear(g, [Part(x, np.arange(cfg.hidden_size))], w1, b1, f1, want, opts)]
    y = linear(g, h, w2, b2, f2, np.arange(cfg.hidden_size), opts)[0].name
    return _layer_norm(g, g.op("Add", [y, x], "Add"), w, ln, eps)


def _word_embeddings(g: Graph, table: np.ndarray, ids: str, int8: bool) -> str:
    """The rows of the word table the ids pick. int8: the table stored as symmetric int8 with
    one scale per row, the picked rows dequantized; the vocabulary table is most of a small
    model's file (MiniLM: 47 of 59 MB), and a row's error is at most half its step, max|row| / 254."""
    if not int8:
        return g.op("Gather", [g.const(table, "word_embeddings"), ids], "Gather")
    q, scale = quantize_weight(table.T, QDQ_QMAX)  # no integer sums here to saturate: all 8 bits
    rows = g.op("Cast", [g.op("Gather", [g.const(q.T, "word_embeddings_int8"), ids], "Gather")], "Cast",
                to=tensor_type(g.float_dtype))
    scales = g.const(scale[:, None], "word_embeddings_scale")
    return g.op("Mul", [rows, g.op("Gather", [scales, ids], "Gather")], "Mul")


def _embeddings(g: Graph, w: _Weights, f: Family, prefix: str, cfg, mask_f: str, int8: bool) -> str:
    """Words + positions (+ token types), then LayerNorm. RoBERTa's positions count the
    attended tokens (padding_idx + 1 onwards, padding_idx on padding), as its
    create_position_ids_from_input_ids does for any input whose padding is masked."""
    ids = f.inputs[0]
    words = _word_embeddings(g, w(f"{prefix}.{f.word_embeddings}.weight"), ids, int8)
    if f.positions == "absolute":
        seq = g.op("Gather", [g.op("Shape", [ids], "Shape"), g.const(np.array(1, np.int64), "one")], "Gather")
        positions = g.op("Range", [g.const(np.array(0, np.int64), "zero"), seq, g.const(np.array(1, np.int64), "one")],
                         "Range")
    else:  # after_padding, counted in the float type (exact far beyond any position table)
        count = g.op("Mul", [g.op("CumSum", [mask_f, g.const(np.array(1, np.int64), "axis")], "CumSum"), mask_f], "Mul")
        count = g.op("Add", [count, g.const(np.array(float(cfg.pad_token_id)), "padding_idx")], "Add")
        positions = g.op("Cast", [count], "Cast", to=onnx.TensorProto.INT64)
    x = g.op("Add", [words, g.op("Gather", [g.const(w(f"{prefix}.{f.position_embeddings}.weight"),
                                                    "position_embeddings"), positions], "Gather")], "Add")
    types = w(f"{prefix}.{f.token_type_embeddings}.weight") if f.token_type_embeddings else None
    if "token_type_ids" in f.inputs:
        x = g.op("Add", [x, g.op("Gather", [g.const(types, "token_type_embeddings"), "token_type_ids"], "Gather")], "Add")
    elif types is not None:  # one token type, always 0: a constant row
        x = g.op("Add", [x, g.const(types[0], "token_type_0")], "Add")
    return _layer_norm(g, x, w, f"{prefix}.{f.embedding_norm}", layer_norm_eps(f, cfg))


def build(model: nn.Module, plan: Plan, opts: LinearOptions = LinearOptions(),
          float_dtype=np.float32) -> onnx.ModelProto:
    """The ONNX graph computing `model` (its weights already pruned to `plan`).
    float_dtype=np.float16 stores weights and computes in fp16; logits stay fp32."""
    f, act = _check_supported(model)
    cfg = model.config
    w = _Weights(model)
    prefix = model.base_model_prefix
    g = Graph(float_dtype)
    io = BERT_IO
    # additive mask (B, 1, 1, S): 0 where attended, the float minimum where padded
    mask_f = g.op("Cast", [f.inputs[1]], "Cast", to=tensor_type(float_dtype))
    m = g.op("Mul", [g.op("Sub", [g.const(np.array(1.0), "one"), mask_f], "Sub"),
                     g.const(np.array(np.finfo(float_dtype).min), "mask_value")], "Mul")
    mask = g.op("Unsqueeze", [m, g.const(np.array([1, 2], np.int64), "axes")], "Unsqueeze")
    x = _embeddings(g, w, f, prefix, cfg, mask_f, opts.int8)

    by_layer = plan.by_layer()
    slices = layer_slices(model, plan)
    for i, layer in enumerate(bert.encoder_layers(model)):
        g.scope = f"layer{i}"
        mps = by_layer[i]
        layer_prefix = f"{bert.layer_prefix(model)}.{i}"
        x = _attention(g, x, mask, w, [mps[kd] for kd in bert.MHA_KINDS], layer_prefix, cfg, opts, f,
                       slices[i].attention)
        x = _ffn(g, x, w, [mps[kd] for kd in bert.FFN_KINDS], layer_prefix, cfg, opts, f, act, slices[i].ffn)

    g.scope = "head"
    head = head_named(model)
    for name, value in zip(head.outputs, HEAD_EMITTERS[head.name](g, x, w, model, f)):
        g.nodes.append(helper.make_node("Cast", [value], [name], name=f"head/{name}", to=FLOAT))

    dims = [io.batch_axis, io.sequence_axis]
    inputs = [helper.make_tensor_value_info(n, tensor_type(io.input_dtype), dims) for n in f.inputs]
    out_dims = head.output_dims(cfg.num_labels, io.sequence_axis)
    outputs = [helper.make_tensor_value_info(n, FLOAT, [io.batch_axis, *out_dims]) for n in head.outputs]
    return g.model(inputs, outputs, "pgb-export")


def _classification_head(g: Graph, x: str, w: _Weights, model: nn.Module, f: Family) -> list[str]:
    """The family's linears (and activations) on the first token, [CLS] or <s>: logits."""
    h = g.op("Gather", [x, g.const(np.array(0, np.int64), "cls_index")], "Gather", axis=1)
    for (_, act), path in zip(f.classifier, _head_linears(model, f, SEQUENCE_CLASSIFICATION)):
        wh, bh = w.linear(path)
        h = g.op("Add", [g.op("MatMul", [h, g.const(wh, "weight")], "MatMul"), g.const(bh, "bias")], "Add")
        h = g.op(act, [h], act) if act else h
    return [h]


def _span_head(g: Graph, x: str, w: _Weights, model: nn.Module, f: Family) -> list[str]:
    """One linear on every token to (start, end), split into start and end logits."""
    wh, bh = w.linear(_head_linears(model, f, QUESTION_ANSWERING)[0])
    both = g.op("Add", [g.op("MatMul", [x, g.const(wh, "weight")], "MatMul"), g.const(bh, "bias")], "Add")
    return [g.op("Gather", [both, g.const(np.array(i, np.int64), "index")], "Gather", axis=2) for i in (0, 1)]


HEAD_EMITTERS = {SEQUENCE_CLASSIFICATION.name: _classification_head, QUESTION_ANSWERING.name: _span_head}

"""The exported graph computes the pruned PyTorch model, in a real ONNX Runtime session."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from pgb_export.bert_graph import build, dense_plan
from pgb_export.bert_io import BERT_IO
from pgb_export.census import census
from pgb_export.graph import Graph
from pgb_export.grouped_linear import Chunks, LinearOptions, Part, exchange, linear
from pruning import bert, cost, repermute
from pruning.plan import MatrixPlan, Plan
from tests.conftest import random_batches, tiny_bert

FORMS = [LinearOptions(g, p) for g in ("split", "batched") for p in ("transpose", "gather")]


def plan_with(model, groups: dict, seed=0) -> Plan:
    """groups: (layer, kind) -> G; unnamed matrices stay dense."""
    gen = torch.Generator().manual_seed(seed)
    mats = []
    for r in bert.matrices(model):
        g = groups.get((r.layer, r.kind), 1)
        pr = torch.randperm(r.shape[0], generator=gen).tolist() if g > 1 else list(range(r.shape[0]))
        pc = torch.randperm(r.shape[1], generator=gen).tolist() if g > 1 else list(range(r.shape[1]))
        mats.append(MatrixPlan(r.name, r.layer, r.kind, r.shape, g, pr, pc))
    return Plan(mats)


def shared_chunk_plan(model, groups: int, shared: dict, seed=0) -> Plan:
    """A tied plan: the kinds in `shared` (kind -> "rows" or "cols") have G = `groups` and the
    same chunks on that side, each chunk in its own order inside; their other side is random;
    every other matrix is dense."""
    gen = torch.Generator().manual_seed(seed)
    mats, chunks = [], None
    for r in bert.matrices(model):
        if r.kind not in shared:
            mats.append(MatrixPlan(r.name, r.layer, r.kind, r.shape, 1, list(range(r.shape[0])), list(range(r.shape[1]))))
            continue
        axis = 0 if shared[r.kind] == "rows" else 1
        n = r.shape[axis]
        chunks = torch.randperm(n, generator=gen).view(groups, -1) if chunks is None else chunks
        tied = torch.cat([c[torch.randperm(n // groups, generator=gen)] for c in chunks]).tolist()
        free = torch.randperm(r.shape[1 - axis], generator=gen).tolist()
        mats.append(MatrixPlan(r.name, r.layer, r.kind, r.shape, groups, *((tied, free) if axis == 0 else (free, tied))))
    return Plan(mats)


def run_both(model, plan, opts, batches):
    graph = build(model, plan, opts)
    onnx.checker.check_model(graph, full_check=True)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        feeds = {k: b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        worst = max(worst, float(np.abs(sess.run(None, feeds)[0] - want).max()))
    return graph, worst


CASES = {
    "dense": {},
    "all grouped": {(l, k): g for l in range(2) for k, g in zip(bert.KINDS, (2, 3, 4, 6, 2, 3))},
    "ffn1 grouped, ffn2 dense": {(0, "ffn1"): 4, (1, "ffn1"): 2},
    "ffn1 dense, ffn2 grouped": {(0, "ffn2"): 6, (1, "ffn2"): 3},
    "dropped q": {(0, "query"): 0, (1, "query"): 0, (1, "key"): 2},
    "dropped k": {(0, "key"): 0, (1, "query"): 3, (1, "key"): 0},
    "dropped q and k": {(0, "query"): 0, (0, "key"): 0},
    "dropped q, grouped o": {(0, "query"): 0, (0, "attn_out"): 3, (1, "query"): 0, (1, "value"): 2, (1, "attn_out"): 4},
    "dropped v": {(0, "value"): 0, (1, "value"): 0, (1, "attn_out"): 2},
    "dropped o": {(0, "attn_out"): 0, (1, "value"): 3},
    "dropped ffn1": {(0, "ffn1"): 0, (1, "ffn1"): 0, (1, "ffn2"): 2},
    "dropped ffn2": {(0, "ffn2"): 0, (1, "ffn1"): 6},
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("opts", FORMS, ids=lambda o: f"{o.grouped_form}-{o.permute_form}")
def test_export_matches_pytorch(case, opts):
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    plan = plan_with(model, CASES[case])
    repermute.apply_plan(model, plan)
    graph, worst = run_both(model, plan, opts, random_batches(3, 4, 10, labels=2, seed=1))
    assert worst <= 1e-5, worst  # the spec allows 1e-4; fp32 reordering alone gives ~1e-7
    counts = census(graph)
    live = cost.kept_params(cost.live(bert.matrices(model), plan.masks()))
    assert counts["encoder_weight_params"] == live  # no MatMul against zeros, no dead weights
    if "dropped v" in case or "dropped o" in case or "dropped ffn" in case:
        assert live < plan.kept
    for t in graph.graph.initializer:
        if t.name.split("/")[-1].split("_")[0] in ("weight", "block", "blocks"):
            assert np.count_nonzero(numpy_helper.to_array(t)) == int(np.prod(t.dims)), t.name


def test_dropped_sublayers_vanish_from_the_graph():
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    plan = plan_with(model, {(0, "value"): 0, (0, "ffn1"): 0, (1, "ffn2"): 0})
    repermute.apply_plan(model, plan)
    layers = census(build(model, plan))["layers"]
    assert layers["layer0"]["MatMul"] == 0  # attention and FFN both constants
    assert layers["layer1"]["MatMul"] == 4 + 2  # Q, K, V, O + scores, context; no FFN


def test_permutation_counts_follow_absorption_rules():
    model = tiny_bert(hidden=48, layers=1, heads=4, ffn=192)
    gathers = lambda groups: census(build(model, plan_with(model, groups), LinearOptions("split", "gather")))["layers"]["layer0"]["Gather"]
    assert gathers({}) == 0
    assert gathers({(0, "ffn1"): 2}) == 1  # input only: FFN2 (dense) absorbs the output order
    assert gathers({(0, "ffn2"): 2}) == 1  # output only: FFN1 (dense) writes FFN2's row order
    assert gathers({(0, "ffn1"): 2, (0, "ffn2"): 3}) == 2  # in and out; between them an exchange
    assert gathers({(0, "query"): 2}) == 2


def test_unsupported_architecture_is_refused():
    from pgb_export.bert_graph import ExportError
    model = tiny_bert(hidden=48, layers=1, heads=4, ffn=192)
    model.config.hidden_act = "mish"
    with pytest.raises(ExportError, match="unsupported activation 'mish'"):
        build(model, dense_plan(model))


@pytest.mark.parametrize("aligned_in", [True, False])
@pytest.mark.parametrize("aligned_out", [True, False])
def test_single_grouped_linear_on_a_tiny_graph(aligned_in, aligned_out):
    rng = np.random.default_rng(0)
    m, n, groups = 12, 18, 3
    mp = MatrixPlan("w", 0, "ffn2", (m, n), groups, rng.permutation(m).tolist(), rng.permutation(n).tolist())
    w = rng.standard_normal((m, n)) * mp.mask().numpy()
    b = rng.standard_normal(n)
    x_order = np.asarray(mp.row_perm)[::-1].copy() if aligned_in else rng.permutation(m)
    if aligned_in:  # reverse the chunk order inside each chunk only: still chunk-aligned
        x_order = np.concatenate([np.asarray(mp.row_perm).reshape(groups, -1)[i][::-1] for i in range(groups)])
    want = (np.concatenate([np.asarray(mp.col_perm).reshape(groups, -1)[i][::-1] for i in range(groups)])
            if aligned_out else np.arange(n))
    g = Graph()
    (y,) = linear(g, [Part("x", x_order)], w, b, mp, want, LinearOptions("split", "gather"))
    order = y.order
    g.nodes.append(helper.make_node("Identity", [y.name], ["y"]))
    model = g.model([helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["B", "S", m])],
                    [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], "test")
    x = rng.standard_normal((2, 5, m)).astype(np.float32)  # x[..., i] holds feature x_order[i]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    original = np.empty_like(x)
    original[..., x_order] = x
    expected = (original.astype(np.float64) @ w + b)[..., order]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert list(order) == list(want)
    n_gathers = sum(nd.op_type == "Gather" for nd in g.nodes)
    assert n_gathers == (not aligned_in) + (not aligned_out)


def test_fp16_export_stays_within_its_tolerance():
    from pgb_export.bert_io import BERT_IO
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    plan = plan_with(model, CASES["all grouped"])
    repermute.apply_plan(model, plan)
    graph = build(model, plan, float_dtype=np.float16)
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # logits stay fp32
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for b in random_batches(3, 4, 10, seed=2):
        feeds = {k: b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        diff = float(np.abs(sess.run(None, feeds)[0] - want).max())
        assert 0 < diff <= BERT_IO.atol_fp16  # > 0: it really computed in fp16


@pytest.mark.parametrize("case", ["all grouped", "ffn1 dense, ffn2 grouped", "dropped q"])
def test_plugin_graph_computes_the_model_without_gathers(case):
    from onnx.reference import ReferenceEvaluator

    from plugins.reference import GroupedLinear
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    plan = plan_with(model, CASES[case])
    repermute.apply_plan(model, plan)
    graph = build(model, plan, LinearOptions(plugin=True))
    onnx.checker.check_model(graph)
    custom = [n for n in graph.graph.node if n.domain == "pgb"]
    live = cost.live(bert.matrices(model), plan.masks())
    assert len(custom) == sum(1 for mp in plan.matrices if mp.groups > 1 and live[mp.name].any())
    layers = census(graph)["layers"]
    assert all(c["Gather"] == 0 for s, c in layers.items() if s.startswith("layer"))
    ev = ReferenceEvaluator(graph, new_ops=[GroupedLinear])
    b = random_batches(1, 3, 9, seed=4)[0]
    feeds = {k: b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(ev.run(None, feeds)[0], want, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_exchange_regroups_parts_exactly(seed):
    """Any parts, any target sets: each output part holds exactly its set, values copied bit
    for bit, and a producer that orders its parts by destination costs at most G_in x G_out
    pieces."""
    rng = np.random.default_rng(seed)
    features, g_in, g_out = 24, (2, 3, 4, 6)[seed], (3, 2, 6, 4)[seed]
    sets = rng.permutation(features).reshape(g_out, -1)
    dest = np.empty(features, int)
    for j, s in enumerate(sets):
        dest[s] = j
    sorted_by_dest = seed % 2 == 0
    sources = rng.permutation(features).reshape(g_in, -1)
    orders = [s[np.argsort(dest[s], kind="stable")] if sorted_by_dest else s for s in sources]
    g = Graph()
    parts = [Part(f"x{i}", o) for i, o in enumerate(orders)]
    out = exchange(g, parts, sets)
    for i, p in enumerate(out):
        g.nodes.append(helper.make_node("Identity", [p.name], [f"y{i}"]))
    model = g.model([helper.make_tensor_value_info(f"x{i}", onnx.TensorProto.FLOAT, ["B", "S", len(o)])
                     for i, o in enumerate(orders)],
                    [helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None) for i in range(g_out)], "t")
    values = rng.standard_normal((2, 3, features)).astype(np.float32)  # by original feature index
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {f"x{i}": values[..., o] for i, o in enumerate(orders)})
    for p, s, y in zip(out, sets, got):
        assert sorted(p.order.tolist()) == sorted(s.tolist())
        assert np.array_equal(y, values[..., p.order])
    pieces = sum(len(n.output) for n in g.nodes if n.op_type == "Split") + sum(
        1 for o in orders if all(dest[o] == dest[o[0]]))
    if sorted_by_dest:
        assert pieces <= g_in * g_out


def test_grouped_ffn_pair_hands_over_without_a_permutation():
    model = tiny_bert(hidden=48, layers=1, heads=4, ffn=192)
    plan = plan_with(model, {(0, "ffn1"): 4, (0, "ffn2"): 6})
    repermute.apply_plan(model, plan)
    graph, worst = run_both(model, plan, LinearOptions(), random_batches(2, 3, 8, seed=3))
    assert worst <= 1e-5
    layer = census(graph)["layers"]["layer0"]
    assert layer["Permutation"] == 2  # FFN1's input and FFN2's output: nothing whole-width between them
    assert layer["Transpose"] == 2 * 2 + 4  # those two; Q, K, V into heads and the context back
    assert 1 <= layer["Exchange"] <= 6  # one Concat per FFN2 block at most
    assert sum(len(n.output) for n in graph.graph.node if n.op_type == "Split" and "Exchange" in n.name) <= 4 * 6


@pytest.mark.parametrize("opts", FORMS + [LinearOptions(int8=True)], ids=lambda o: f"{o.grouped_form}-{o.permute_form}-int8{o.int8}")
def test_tied_ffn_hands_its_blocks_over_uncopied(opts):
    """A tied FFN (pgb-prune --tie-ffn): W_2's row chunks are W_1's column chunks, each in
    another order inside. FFN1's blocks feed FFN2's as they are: no exchange, no Concat or
    permutation between them, and the graph still computes the model."""
    model = tiny_bert(hidden=48, layers=1, heads=4, ffn=192)
    plan = shared_chunk_plan(model, 4, {"ffn1": "cols", "ffn2": "rows"}, seed=5)
    repermute.apply_plan(model, plan)
    graph, worst = run_both(model, plan, opts, random_batches(2, 3, 8, seed=8))
    assert worst <= (BERT_IO.atol_int8 if opts.int8 else 1e-5)
    layer = census(graph)["layers"]["layer0"]
    assert layer["Exchange"] == 0 and layer["Permutation"] == 2  # FFN1's input, FFN2's output
    assert not [n for n in graph.graph.node if "Exchange" in n.name]
    # the one Concat left in the FFN is FFN2's blocks (split form); FFN1's outputs stay apart
    concats = [n for n in graph.graph.node if n.op_type == "Concat" and n.name.startswith("layer0/")]
    assert len(concats) == (0 if opts.grouped_form == "batched" else 1)


def test_readers_of_one_activation_share_its_features_first_copy():
    """Q, K and V read the same residual tensor: one transpose of it serves all three
    permutations (their outputs each need their own)."""
    model = tiny_bert(hidden=48, layers=1, heads=4, ffn=192)
    plan = plan_with(model, {(0, "query"): 2, (0, "key"): 3, (0, "value"): 4})
    repermute.apply_plan(model, plan)
    graph, worst = run_both(model, plan, LinearOptions(), random_batches(2, 3, 8, seed=6))
    assert worst <= 1e-5
    layer = census(graph)["layers"]["layer0"]
    assert layer["Permutation"] == 6  # in and out of each
    assert layer["Transpose"] == 1 + 3 + 2 * 3 + 4  # shared in, back x3; out x3 (two each); heads


@pytest.mark.parametrize("opts", FORMS + [LinearOptions(int8=True)], ids=lambda o: f"{o.grouped_form}-{o.permute_form}-int8{o.int8}")
def test_tied_qkv_permute_their_input_once(opts):
    """A tied plan (pgb-prune --tie-qkv): W_Q, W_K, W_V with one G and the same row chunks,
    each chunk in another order, and their own columns. The export permutes (and splits) the
    input once for all three, and still computes the model."""
    model = tiny_bert(hidden=48, layers=1, heads=4, ffn=192)
    plan = shared_chunk_plan(model, 3, {"query": "rows", "key": "rows", "value": "rows"}, seed=3)
    repermute.apply_plan(model, plan)
    graph, worst = run_both(model, plan, opts, random_batches(2, 3, 8, seed=7))
    assert worst <= (BERT_IO.atol_int8 if opts.int8 else 1e-5)
    layer = census(graph)["layers"]["layer0"]
    assert layer["Permutation"] == 1 + 3  # the shared input; each output back to its head order
    splits = [n for n in graph.graph.node if n.op_type == "Split" and n.name.startswith("layer0/Split")]
    assert len(splits) == (0 if opts.grouped_form == "batched" else 1)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_ort_attention_is_the_standard_attention(case, int8):
    """ort_attention (the dynamic INT8 export's form): every layer whose W_Q and W_K are live
    runs as one com.microsoft.MultiHeadAttention node, the rest as before, and the logits are
    the standard graph's, padded rows included."""
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    plan = plan_with(model, CASES[case])
    repermute.apply_plan(model, plan)
    batches = random_batches(3, 4, 10, labels=2, seed=2)
    fused, worst = run_both(model, plan, LinearOptions(int8=int8, ort_attention=True), batches)
    assert worst <= (BERT_IO.atol_int8 if int8 else 1e-5), worst
    by = {(mp.layer, mp.kind): mp.groups for mp in plan.matrices}
    fused_layers = [l for l in range(2) if all(by[(l, kd)] for kd in ("query", "key", "value", "attn_out"))]
    nodes = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    assert sorted(int(n.name.split("/")[0][5:]) for n in nodes) == fused_layers
    assert all(n.domain == "com.microsoft" for n in nodes)
    standard = ort.InferenceSession(build(model, plan, LinearOptions(int8=int8)).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    ours = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    for b in batches:
        feeds = {k: b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
        np.testing.assert_allclose(ours.run(None, feeds)[0], standard.run(None, feeds)[0], rtol=0, atol=1e-5)

"""scripts/latency_ceiling.py: the linears of a dense export found by layer and kind, and the
ceiling of a plan computed from a real ONNX Runtime profile of that graph."""
import numpy as np
import pytest

from pgb_export.bert_graph import build, dense_plan
from pruning import bert
from pruning.plan import uniform_plan
from tests.conftest import ROOT, tiny_bert


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(ROOT / "scripts"))
    import latency_ceiling as lc
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    graph = build(model, dense_plan(model), lc.PRECISIONS["fp32"])
    feeds = {"input_ids": np.full((2, 16), 7, np.int64), "attention_mask": np.ones((2, 16), np.int64),
             "token_type_ids": np.zeros((2, 16), np.int64)}
    kernel, outside, optimized = lc.profile(graph.SerializeToString(), feeds, 3, tmp_path_factory.mktemp("p"))
    yield lc, model, graph, kernel, optimized
    mp.undo()


def test_linears_are_found_by_layer_and_kind(profiled):
    lc, model, graph, kernel, _ = profiled
    linears = lc.linear_nodes(graph, 2)
    assert sorted(linears.values()) == sorted((layer, kind) for layer in range(2) for kind in bert.KINDS)
    inits = {i.name: tuple(i.dims) for i in graph.graph.initializer}
    shapes = {(r.layer, r.kind): r.shape for r in bert.matrices(model)}
    for node in graph.graph.node:
        if node.name in linears:
            assert inits[node.input[1]] == shapes[linears[node.name]]
    assert set(linears) <= set(kernel)  # the profile names them as the graph does


def test_ceiling_scales_linears_by_g_and_removes_dropped_sublayers(profiled):
    lc, model, graph, kernel, optimized = profiled
    refs = bert.matrices(model)
    linears, parts = lc.linear_nodes(graph, 2), lc.sublayer_of(optimized)
    total = sum(kernel.values())
    assert lc.ceiling(kernel, linears, parts, dense_plan(model)) == pytest.approx(total)
    linear_ms = sum(kernel[n] for n in linears)
    halved = uniform_plan(refs, 2)
    assert lc.ceiling(kernel, linears, parts, halved) == pytest.approx(total - linear_ms / 2)
    # layer 0's FFN dropped: of its nodes only the residual Add and the LayerNorm stay
    plan = dense_plan(model)
    for mp in plan.matrices:
        if mp.layer == 0 and mp.kind == "ffn2":
            mp.groups = 0
    ffn0 = {n: kept for n, (layer, part, kept) in parts.items() if (layer, part) == (0, "ffn")}
    kept = [n for n, k in ffn0.items() if k]
    ops = {n.name: n.op_type for n in optimized.graph.node}
    assert sorted(ops[n] for n in kept) == ["Add", "LayerNormalization"]
    assert any(ops[n] == "MatMul" for n in ffn0) and len(ffn0) > len(kept)
    gone = sum(kernel[n] for n, k in ffn0.items() if not k)
    assert lc.ceiling(kernel, linears, parts, plan) == pytest.approx(total - gone)


def test_sliced_sublayers_scale_by_the_share_they_keep(profiled):
    """Half of layer 0's FFN neurons and one of layer 1's four heads zeroed as pgb-prune's
    --ffn neurons and --ablation structured leave them: those sub-layers' nodes, linears
    included, count at the share kept; their LayerNorm and residual Add in full."""
    import copy

    import torch
    lc, model, graph, kernel, optimized = profiled
    pruned = copy.deepcopy(model)
    refs = {(r.layer, r.kind): r for r in bert.matrices(pruned)}
    with torch.no_grad():
        pruned.get_parameter(f"{refs[(0, 'ffn2')].name}.weight")[:, ::2] = 0
        pruned.get_parameter(f"{refs[(0, 'ffn1')].name}.weight")[::2] = 0
        pruned.get_parameter(f"{refs[(1, 'attn_out')].name}.weight")[:, 12:24] = 0  # head 1 of 4 (width 12)
    plan = dense_plan(pruned)
    shares = lc.sliced_shares(pruned, plan)
    assert shares == {(0, "ffn"): 0.5, (1, "attention"): 0.75}
    linears, parts = lc.linear_nodes(graph, 2), lc.sublayer_of(optimized)
    total = sum(kernel.values())
    saved = sum(ms * (1 - shares[parts[n][:2]]) for n, ms in kernel.items()
                if n in parts and parts[n][:2] in shares and not parts[n][2])
    assert saved > 0 and any(linears.get(n) == (0, "ffn1") for n in kernel)
    assert lc.ceiling(kernel, linears, parts, plan, shares) == pytest.approx(total - saved)
    assert lc.ceiling(kernel, linears, parts, plan) == pytest.approx(total)  # without shares: dense

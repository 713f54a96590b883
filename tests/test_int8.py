"""Dynamic INT8 export (--int8): symmetric per-channel weights stored for the kept blocks only,
every activation quantized once however many linears read it, outputs close to PyTorch's
fp32 in a real ONNX Runtime session for every family, and the CLI's parity within the
stated tolerances."""
import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from pgb_export import lowering
from pgb_export.bert_graph import build
from pgb_export.bert_io import BERT_IO
from pgb_export.census import census
from pgb_export.grouped_linear import DYNAMIC_QMAX, QDQ_QMAX, LinearOptions, quantize_weight
from pruning import bert, cost, repermute
from pruning.plan import MatrixPlan, Plan
from tests.test_export_graph import CASES, plan_with
from tests.test_families import FAMILIES, batches, tiny, worst_logit_diff
from tests.test_reliability import assert_refused, call


@pytest.mark.parametrize("qmax", [DYNAMIC_QMAX, QDQ_QMAX])
def test_weight_quantization_is_symmetric_per_channel(qmax):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(12, 5))
    w[:, 3] = 0.0  # a dropped column keeps a harmless scale
    wq, scale = quantize_weight(w, qmax)
    assert wq.dtype == np.int8 and np.abs(wq).max() <= qmax
    assert np.all(np.abs(wq).max(axis=0)[[0, 1, 2, 4]] == qmax)  # each channel uses its full range
    assert scale[3] == 1.0 and not wq[:, 3].any()
    assert np.all(np.abs(w - wq * scale) <= scale / 2 + 1e-12)  # round to nearest


def test_dynamic_int8_sums_are_exact_on_every_cpu():
    """The weights the dynamic INT8 graph stores, against the largest activations: ONNX
    Runtime's MatMulInteger on this CPU gives numpy's exact int32 sums. With 8-bit weights
    the same product saturates on x86 CPUs without VNNI (int16 pair sums), so the test
    pins the 7-bit range, not this machine's kernel."""
    rng = np.random.default_rng(1)
    wq, _ = quantize_weight(rng.normal(size=(384, 64)), DYNAMIC_QMAX)
    wq[0::2] = np.where(wq[0::2] > 0, DYNAMIC_QMAX, -DYNAMIC_QMAX)  # worst pairs: both at the range's ends
    wq[1::2] = np.sign(wq[0::2]) * DYNAMIC_QMAX
    x = np.where(rng.random((8, 384)) < 0.5, 255, 0).astype(np.uint8)
    x[:, :2] = 255
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["x", "w", "zero"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [8, 384])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.INT32, [8, 64])],
                              [numpy_helper.from_array(wq, "w"), numpy_helper.from_array(np.array(0, np.uint8), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (y == x.astype(np.int64) @ wq.astype(np.int64)).all()
    assert 255 * DYNAMIC_QMAX * 2 <= np.iinfo(np.int16).max < 255 * QDQ_QMAX * 2


@pytest.mark.parametrize("case", ["dense", "all grouped", "dropped v", "ffn1 dense, ffn2 grouped"])
@pytest.mark.parametrize("name", FAMILIES)
def test_int8_graph_matches_pytorch_within_tolerance(name, case):
    model = tiny(name)
    plan = plan_with(model, CASES[case])
    repermute.apply_plan(model, plan)
    graph = build(model, plan, LinearOptions(int8=True))
    onnx.checker.check_model(graph, full_check=True)
    nodes = graph.graph.node
    # one quantization per activation: no two DynamicQuantizeLinear nodes read the same tensor
    quantized = Counter(n.input[0] for n in nodes if n.op_type == "DynamicQuantizeLinear")
    assert quantized and max(quantized.values()) == 1
    # every linear of the encoder runs as MatMulInteger on int8 weights, stored for kept blocks only
    assert not [n for n in nodes if n.op_type == "MatMul" and n.name.startswith("layer")
                and any(i.split("/")[-1].startswith(("weight", "block")) for i in n.input)]
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    int8_params = sum(v.size for k, v in inits.items() if v.dtype == np.int8 and k.startswith("layer"))
    assert int8_params == cost.kept_params(cost.live(bert.matrices(model), plan.masks()))
    assert census(graph)["encoder_weight_params"] == int8_params
    worst = worst_logit_diff(graph, model, name)
    assert worst <= BERT_IO.atol_int8, worst
    assert worst > 0  # it really is quantized


def test_int8_export_as_a_user_runs_it(tmp_path):
    """pgb-export --int8 on a pruned classifier: report precision int8, outputs and the dev
    metric within the int8 tolerances; --int8 with --fp16 / --plugin / --trt is refused."""
    from transformers import AutoTokenizer

    from pgb_export import export_cli
    from pruning import modeldir
    from tests.test_reliability import sentences
    tok = AutoTokenizer.from_pretrained(modeldir.embedded_encoder())
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=48, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=96, num_labels=2))
    plan = plan_with(model, CASES["all grouped"])
    repermute.apply_plan(model, plan)
    model.config.finetuning_task = "sst2"  # as pgb-prune writes it: the hint below names it
    model.save_pretrained(tmp_path / "pruned")
    tok.save_pretrained(tmp_path / "pruned")
    plan.save(tmp_path / "pruned" / "pgb.json")
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    rows = "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences(40, 3)))
    (tmp_path / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    code, err = call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "deploy"), "--int8", "--task",
                     "sst2", "--glue-dir", str(tmp_path / "glue"))
    assert code == 0, err
    report = json.loads((tmp_path / "deploy" / "report.json").read_text())
    assert report["graph"]["precision"] == "int8" and report["warnings"] == []
    assert report["parity"]["ok"] and report["parity"]["atol"] == BERT_IO.atol_int8
    assert report["accuracy"]["tolerance_points"] == 1.0 and report["accuracy"]["difference_points"] <= 1.0
    contrib = {(n.domain, n.op_type) for n in onnx.load(tmp_path / "deploy" / "onnx" / "model.onnx").graph.node
               if n.domain}
    assert contrib == {("com.microsoft", "MultiHeadAttention")}  # fused attention: this graph is ORT's only
    assert report["graph"]["attention"] == "fused" and report["graph"]["weight_bits"] == 7
    initializers = onnx.load(tmp_path / "deploy" / "onnx" / "model.onnx").graph.initializer
    stored = [numpy_helper.to_array(t) for t in initializers
              if t.data_type == onnx.TensorProto.INT8 and "word_embeddings" not in t.name]
    assert stored and max(int(np.abs(w.astype(np.int16)).max()) for w in stored) == DYNAMIC_QMAX
    # the vocabulary table is int8 too (a Gather, no integer sums to saturate: all 8 bits)
    table = {t.name.split("/")[-1]: numpy_helper.to_array(t) for t in initializers if "word_embeddings" in t.name}
    assert set(table) == {"word_embeddings_int8", "word_embeddings_scale"}
    assert table["word_embeddings_int8"].dtype == np.int8 and table["word_embeddings_int8"].shape == (len(tok), 48)
    assert report["graph"]["word_embeddings"] == "int8, one scale per row"
    # at width 48 no grouped linear pays for its copies: each written dense, its zeros stored
    live = report["params"]["live"]
    assert report["graph"]["grouping"] == "auto"
    assert report["graph"]["written_dense"] == [mp.name for mp in plan.matrices if mp.groups > 1]
    assert report["params"]["stored"] == report["graph"]["census"]["encoder_weight_params"] > live
    assert report["graph"]["census"]["total"]["Permutation"] == 0
    qdq = report["qdq"]  # the explicit-INT8 graph for TensorRT, checked through ONNX Runtime
    assert (tmp_path / "deploy" / qdq["file"]).is_file() and qdq["failures"] == []
    assert qdq["calibration"]["rows"] == 40 and qdq["tensorrt_compat"]["ok"]
    assert qdq["calibration"]["method"] == "max" and qdq["calibration"]["fallback"]["budget"] == 0.8
    assert 0 < qdq["parity"]["max_abs_diff"] <= BERT_IO.atol_int8
    assert qdq["accuracy"]["difference_points"] <= 1.0
    assert qdq["census"]["encoder_weight_params"] == report["params"]["live"]
    assert not any(n.domain for n in onnx.load(tmp_path / "deploy" / qdq["file"]).graph.node)  # standard ONNX
    code, err = call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "standard"), "--int8",
                     "--attention", "standard")
    assert code == 0, err
    assert not any(n.domain for n in onnx.load(tmp_path / "standard" / "onnx" / "model.onnx").graph.node)
    # without dev data nothing checks the task metric, and the user is told how to have it checked
    unchecked = json.loads((tmp_path / "standard" / "report.json").read_text())
    assert "accuracy" not in unchecked and unchecked["qdq"]["calibration"]["rows"] < 40
    assert len(unchecked["warnings"]) == 1 and "add --task sst2 to check it" in unchecked["warnings"][0]
    assert "warning: no dev data: the INT8 task metric is not checked" in err
    assert "- warning: no dev data" in (tmp_path / "standard" / "README.md").read_text()
    code, err = call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "grouped"), "--int8",
                     "--grouping", "all")
    assert code == 0, err
    grouped = json.loads((tmp_path / "grouped" / "report.json").read_text())
    assert grouped["graph"]["written_dense"] == [] and grouped["graph"]["grouping"] == "all"
    assert grouped["params"]["stored"] == grouped["graph"]["census"]["encoder_weight_params"] == live
    assert grouped["graph"]["census"]["total"]["Permutation"] > 0
    assert_refused(*call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "d2"), "--grouping", "all"),
                   "pgb-export", "--grouping only applies with --int8")
    assert_refused(*call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "d2"), "--calibration", "mse"),
                   "pgb-export", "--calibration sets the ranges of the QDQ graph")
    assert_refused(*call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "d2"), "--trt", "--calibration",
                         "mse"), "pgb-export", "--calibration sets the ranges of the QDQ graph")
    assert_refused(*call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "d2"), "--attention", "fused"),
                   "pgb-export", "--attention only applies with --int8")
    for flag in ("--fp16", "--plugin"):
        assert_refused(*call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "d2"), "--int8", flag),
                       "pgb-export", f"does not combine with {flag}")
    assert_refused(*call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "d2"), "--int8", "--trt"),
                   "pgb-export", "--trt --precision int8")
    assert_refused(*call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "d2"), "--trt", "--precision",
                         "int8", "--plugin"), "pgb-export", "does not combine with --plugin")


@pytest.mark.parametrize("case", ["dense", "all grouped", "dropped v", "ffn1 dense, ffn2 grouped"])
@pytest.mark.parametrize("name", FAMILIES)
def test_qdq_graph_is_explicit_int8_that_tensorrts_parser_takes(name, case):
    """Every encoder MatMul reads an int8 weight (kept blocks only) through DequantizeLinear
    and its input through QuantizeLinear -> DequantizeLinear at the calibrated range; zero
    points 0; TensorRT's parser table takes it; outputs within the int8 tolerance."""
    from pgb_export.calibration import input_ranges
    from pgb_export.trt_compat import check
    model = tiny(name)
    plan = plan_with(model, CASES[case])
    repermute.apply_plan(model, plan)
    ranges = input_ranges(model, batches(name))
    graph = build(model, plan, LinearOptions(qdq=ranges))
    onnx.checker.check_model(graph, full_check=True)
    assert check(graph).ok, check(graph).problems
    producers = {o: n for n in graph.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    live = cost.live(bert.matrices(model), plan.masks())
    weight_matmuls = [n for n in graph.graph.node if n.op_type == "MatMul" and n.name.startswith("layer")
                      and producers.get(n.input[1]) is not None and producers[n.input[1]].op_type == "DequantizeLinear"]
    assert weight_matmuls
    for n in weight_matmuls:
        act, wdq = producers[n.input[0]], producers[n.input[1]]
        assert act.op_type == "DequantizeLinear" and producers[act.input[0]].op_type == "QuantizeLinear"
        assert inits[wdq.input[0]].dtype == np.int8 and not inits[wdq.input[2]].any() and not inits[act.input[2]].any()
    assert sum(inits[producers[n.input[1]].input[0]].size for n in weight_matmuls) == cost.kept_params(live)
    scales = {float(inits[producers[n.input[0]].input[1]]) for n in weight_matmuls}
    assert scales <= {np.float32(ranges[mp.name] / 127) for mp in plan.matrices}
    worst = worst_logit_diff(graph, model, name)
    assert 0 < worst <= BERT_IO.atol_int8, worst


def test_calibration_range_is_the_largest_input_each_linear_saw():
    from pgb_export.calibration import input_ranges
    model = tiny("bert")
    refs = bert.matrices(model)
    ranges = input_ranges(model, batches("bert"))
    assert set(ranges) == {r.name for r in refs}
    with torch.no_grad():
        states = [model(**b, output_hidden_states=True).hidden_states for b in batches("bert")]
    for r in refs:
        if r.kind in ("query", "key", "value"):  # they read the layer's input, the previous hidden state
            want = max(float(s[r.layer].abs().max()) for s in states)
            assert ranges[r.name] == pytest.approx(want, rel=1e-6)
    assert model.training is False


def test_float_fallback_leaves_the_linear_that_moves_the_outputs_most_in_float():
    from pgb_export import calibration
    model = tiny("bert")
    rows = batches("bert")
    ranges = calibration.input_ranges(model, rows)
    victim = bert.matrices(model)[10].name  # layer 1's FFN1
    ranges[victim] /= 50  # clipped hard: its quantized input is far off
    # this random model's logits are about 0.2, its int8 error about 3e-5 and the victim's 7e-4
    floats, report = calibration.float_fallback(model, rows, ranges, budget=1e-4)
    assert floats == [victim] and report["max_abs_diff"] <= 1e-4 < report["max_abs_diff_all_int8"]
    assert max(report["sensitivity"], key=report["sensitivity"].get) == victim
    assert calibration.float_fallback(model, rows, ranges, budget=float("inf"))[0] == []
    # never more than a quarter of the linears, however far off the rest stay
    capped, report = calibration.float_fallback(model, rows, ranges, budget=0.0)
    assert len(capped) == int(calibration.MAX_FALLBACK * 12) and report["max_abs_diff"] > 0
    # the QDQ graph reads the float linears' inputs unquantized, and is closer to PyTorch for it
    graph = build(model, plan_with(model, CASES["dense"]), LinearOptions(qdq={n: a for n, a in ranges.items()
                                                                             if n not in floats}))
    def quantized_inputs(g):  # MatMuls that read a dequantized activation
        producers = {o: n for n in g.graph.node for o in n.output}
        return sum(n.op_type == "MatMul" and n.input[0] in producers
                   and producers[n.input[0]].op_type == "DequantizeLinear" for n in g.graph.node)

    spoiled = build(model, plan_with(model, CASES["dense"]), LinearOptions(qdq=ranges))
    assert quantized_inputs(spoiled) - quantized_inputs(graph) == 1 and quantized_inputs(graph) == 11
    assert worst_logit_diff(graph, model, "bert") < worst_logit_diff(spoiled, model, "bert")


def test_mse_range_clips_a_lone_outlier_but_not_an_even_spread():
    from pgb_export.calibration import BINS, _mse_clip
    even = torch.full((BINS,), 100.0, dtype=torch.float64)
    assert _mse_clip(even, 8.0) >= 0.99 * 8.0
    outlier = torch.zeros(BINS, dtype=torch.float64)
    outlier[: BINS // 100] = 50_000.0  # a million values within 1 % of the range
    outlier[-1] = 1.0  # and one at the top
    # (100 - c)^2 for the clipped one, 1e6 (c / 127)^2 / 12 for the rest: least at c = 16.2
    want = 100 / (1 + 1e6 / (127 ** 2 * 12))
    assert _mse_clip(outlier, 100.0) == pytest.approx(want, abs=100 / BINS)


def test_calibration_rows_come_after_the_output_check_texts():
    from types import SimpleNamespace

    from pgb_export.exporter import CALIBRATION_ROWS, _calibration_batches
    dev = SimpleNamespace(batches=[{"input_ids": torch.full((32, 4), i)} for i in range(12)])
    rows = _calibration_batches(None, None, ["t"] * 64, dev, 16)
    assert [int(b["input_ids"][0, 0]) for b in rows] == list(range(2, 2 + CALIBRATION_ROWS // 32))
    # a dev set no longer than the texts calibrates on all of it
    assert _calibration_batches(None, None, ["t"] * 64, SimpleNamespace(batches=dev.batches[:2]), 16) == dev.batches[:2]


def _minilm_layer(hidden: int, groups: dict, tied_ffn: bool = False) -> Plan:
    """One encoder layer's plan of the given width (FFN 4x), groups: kind -> G (default 1),
    each matrix under its own random orders; `tied_ffn`: W_2's rows take W_1's column order
    (pgb-prune --tie-ffn)."""
    shapes = dict(zip(bert.KINDS, [(hidden, hidden)] * 4 + [(hidden, 4 * hidden), (4 * hidden, hidden)]))
    gen = torch.Generator().manual_seed(hidden)
    orders = {k: [torch.randperm(d, generator=gen).tolist() for d in shapes[k]] for k in bert.KINDS}
    if tied_ffn:
        orders["ffn2"][0] = orders["ffn1"][1]
    return Plan([MatrixPlan(f"l0.{k}", 0, k, shapes[k], groups.get(k, 1), *orders[k]) for k in bert.KINDS])


def test_cost_model_prices_each_chain_by_its_widths():
    # FFN1 -> FFN2 of MiniLM, both grouped at G = 6: the blocks' MACs, FFN1's input permutation,
    # the exchange (two copies of FFN1's 1536 outputs), FFN2's Concat and output permutation
    ffn = [mp for mp in _minilm_layer(384, {"ffn1": 6, "ffn2": 6}).matrices if mp.kind in bert.FFN_KINDS]
    assert lowering.chain_cost(ffn, [True, True]) == (
        2 * 384 * 1536 / 6 + lowering.PERMUTE * 384 + 2 * lowering.COPY * 1536 + (lowering.COPY + lowering.PERMUTE) * 384)
    assert lowering.chain_cost(ffn, [False, True]) == 384 * 1536 * (1 + 1 / 6) + (lowering.COPY + lowering.PERMUTE) * 384
    assert lowering.chain_cost(ffn, [False, False]) == 2 * 384 * 1536
    # tied: FFN1's blocks are FFN2's row chunks, so the hand-over copies nothing
    tied = [mp for mp in _minilm_layer(384, {"ffn1": 6, "ffn2": 6}, tied_ffn=True).matrices if mp.kind in bert.FFN_KINDS]
    assert lowering.hands_over_aligned(*tied) and not lowering.hands_over_aligned(*ffn)
    assert lowering.chain_cost(tied, [True, True]) == (
        2 * 384 * 1536 / 6 + lowering.PERMUTE * 384 + (lowering.COPY + lowering.PERMUTE) * 384)
    # the same neurons in other chunks of equal size are not aligned
    other = _minilm_layer(384, {"ffn1": 6, "ffn2": 3}, tied_ffn=True)
    assert not lowering.hands_over_aligned(other["l0.ffn1"], other["l0.ffn2"])


def test_int8_writes_dense_what_its_copies_make_slower():
    """MiniLM's width: no attention projection pays for its two permutations, FFN1 not for its
    permutation and the Concat of 1536 outputs, FFN2 does; a wide layer keeps its grouping."""
    mini = _minilm_layer(384, {"query": 8, "key": 6, "value": 2, "attn_out": 4, "ffn1": 6, "ffn2": 6})
    assert lowering.dense_cheaper(mini) == ["l0.query", "l0.key", "l0.value", "l0.attn_out", "l0.ffn1"]
    wide = _minilm_layer(2048, {"query": 4, "ffn1": 4, "ffn2": 4})
    assert lowering.dense_cheaper(wide) == []
    # a tied FFN pays at MiniLM's width: no exchange between its blocks
    tied = _minilm_layer(384, {"query": 8, "ffn1": 6, "ffn2": 6}, tied_ffn=True)
    assert lowering.dense_cheaper(tied) == ["l0.query"]
    # a constant sub-layer (dropped W_V) writes none of its linears: nothing to name
    assert lowering.dense_cheaper(_minilm_layer(384, {"query": 8, "value": 0, "ffn1": 0, "ffn2": 6})) == []
    written = lowering.densified(mini, ["l0.query"])
    assert written["l0.query"].groups == 1 and written["l0.query"].row_perm == list(range(384))
    assert written["l0.key"] == mini["l0.key"] and mini["l0.query"].groups == 8  # a new plan


@pytest.mark.parametrize("name", FAMILIES)
def test_attention_written_dense_gives_the_grouped_graphs_logits(name):
    """Dense writing is exact where the linear's input is quantized as one tensor either way:
    the attention projections give the same int32 sums, so the same logits."""
    model = tiny(name)
    plan = plan_with(model, {k: g for k, g in CASES["all grouped"].items() if k[1] in bert.MHA_KINDS})
    repermute.apply_plan(model, plan)
    dense = lowering.dense_cheaper(plan)
    assert len(dense) == 8  # every projection of both layers
    opts = LinearOptions(int8=True, ort_attention=True)
    grouped, written = build(model, plan, opts), build(model, lowering.densified(plan, dense), opts)
    assert census(grouped)["total"]["Permutation"] > 0 and census(written)["total"]["Permutation"] == 0
    feeds = {k: v.numpy() for k, v in batches(name)[0].items() if k in {i.name for i in grouped.graph.input}}
    a, b = (ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            for g in (grouped, written))
    assert np.abs(a - b).max() <= 1e-6


def test_int8_word_embeddings_are_within_half_a_step_of_the_table():
    """The dynamic INT8 graph's vocabulary table: int8 with one scale per row, each looked-up
    element within half its row's step (max|row| / 254) of the float table, a zero row zero,
    in a real ONNX Runtime session."""
    from pgb_export.bert_graph import _word_embeddings
    from pgb_export.graph import Graph
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)) * rng.uniform(0.01, 3.0, size=(50, 1))  # rows of very different size
    table[7] = 0.0
    g = Graph()
    out = _word_embeddings(g, table, "ids", int8=True)
    g.nodes.append(helper.make_node("Identity", [out], ["rows"]))
    model = g.model([helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["b", "s"])],
                    [helper.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, ["b", "s", 8])], "test")
    ids = np.array([[0, 7, 49, 3], [12, 12, 7, 1]], np.int64)
    rows = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    step = np.abs(table).max(axis=1) / 127
    error = np.abs(rows - table[ids])
    assert np.all(error <= step[ids][..., None] / 2 * (1 + 1e-6) + 1e-7)
    assert not rows[0, 1].any() and not rows[1, 2].any()
    assert error.max() > 0  # it is quantized, not a float copy
    assert {t.data_type for t in model.graph.initializer if t.name.endswith("word_embeddings_int8")} == {onnx.TensorProto.INT8}

"""The TensorRT ONNX-parser check runs on the CPU: clean on our graphs, and it catches
what TensorRT would reject."""
import numpy as np
import onnx
from onnx import helper

from pgb_export.bert_graph import build
from pgb_export.trt_compat import TABLE, check
from pruning import repermute
from tests.test_export_graph import CASES, plan_with, tiny_bert


def exported(fp16=False):
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    plan = plan_with(model, CASES["all grouped"])
    repermute.apply_plan(model, plan)
    return build(model, plan, float_dtype=np.float16 if fp16 else np.float32)


def test_exported_graphs_pass_and_the_table_names_its_source():
    assert "TensorRT" in TABLE["source"] and TABLE["tensorrt_version"]
    for fp16 in (False, True):
        report = check(exported(fp16))
        assert report.ok, report.problems
        assert report.operators["MatMul"] > 0


def test_planted_unsupported_operator_is_caught():
    graph = exported()
    graph.graph.node.append(helper.make_node("Unique", ["logits"], ["uniq"], name="planted/Unique"))
    report = check(graph)
    assert not report.ok and any("planted/Unique" in p and "not supported" in p for p in report.problems)


def test_planted_int64_arithmetic_is_caught():
    graph = exported()
    graph.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1, np.int64), "planted_one"))
    graph.graph.node.append(helper.make_node("Add", ["input_ids", "planted_one"], ["ids_plus"], name="planted/Add"))
    report = check(graph)
    assert any("int64 arithmetic" in p for p in report.problems)


def test_custom_node_needs_its_plugin_domain_and_opset_range():
    graph = exported()
    graph.graph.node.append(helper.make_node("GroupedLinear", ["logits"], ["g"], name="x/GL", domain="pgb"))
    graph.opset_import.append(helper.make_opsetid("pgb", 1))
    assert any("has no plugin" in p for p in check(graph).problems)
    assert not any("has no plugin" in p for p in check(graph, plugin_domain="pgb").problems)
    old = exported()
    old.opset_import[0].version = 8
    assert any("outside" in p for p in check(old).problems)


def test_quantize_zero_points_must_be_constant_zero():
    def qdq(zero):
        inits = [onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s")]
        inputs = ["x", "s"]
        if zero is not None:
            inits.append(onnx.numpy_helper.from_array(np.array(zero, np.int8), "z"))
            inputs.append("z")
        nodes = [helper.make_node("QuantizeLinear", inputs, ["q"], name="q"),
                 helper.make_node("DequantizeLinear", ["q", *inputs[1:]], ["logits"], name="dq")]
        g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 2])], inits)
        return check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert qdq(0).ok, qdq(0).problems
    # absent: the default 0 is no zero-point problem (its uint8 output is a type problem)
    assert qdq(None).problems == ["dq: DequantizeLinear on UINT8 tensor 'q' is not supported"]
    assert sum("zero point must be a constant 0" in p for p in qdq(3).problems) == 2

"""Each FFN activation the exporter accepts is the function transformers computes under that
name: its ONNX pattern in a real ONNX Runtime session, and its float64 value used for folded
constants, against transformers' own module over the range where the variants differ."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from transformers.activations import ACT2FN

from pgb_export.activations import ACTIVATIONS
from pgb_export.graph import Graph

X = np.linspace(-8.0, 8.0, 4001)


def run_pattern(act) -> np.ndarray:
    g = Graph(np.float32)
    out = act.emit(g, "x")
    model = g.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(X)])],
                    [helper.make_tensor_value_info(out, TensorProto.FLOAT, [len(X)])], "test")
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": X.astype(np.float32)})[0]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_pattern_and_value_are_transformers_function(name):
    with torch.no_grad():
        want = ACT2FN[name](torch.from_numpy(X)).numpy()  # float64
    act = ACTIVATIONS[name]
    np.testing.assert_allclose(act.value(X), want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(run_pattern(act), want, rtol=0, atol=2e-6)  # float32 arithmetic


def test_the_gelu_variants_are_told_apart():
    """The erf and tanh GELUs differ by more than the tolerance above, so a name mapped to the
    wrong one fails."""
    gap = np.abs(ACTIVATIONS["gelu"].value(X) - ACTIVATIONS["gelu_new"].value(X)).max()
    assert gap > 1e-4, gap

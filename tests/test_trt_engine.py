"""TensorRT engines: real builds and parity where TensorRT and a GPU exist; skipped, with
the reason, everywhere else. Never mocked."""
import numpy as np
import pytest

from pgb_export.trt_engine import EngineSpec, TensorRTUnavailable, build, open_engine, require_tensorrt

try:
    require_tensorrt(plugin=True)
    REASON = None
except TensorRTUnavailable as e:
    REASON = str(e)

needs_trt = pytest.mark.skipif(REASON is not None, reason=f"TensorRT path not testable here: {REASON}")


@needs_trt
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 1e-2)])
@pytest.mark.parametrize("plugin", [False, True])
def test_engine_matches_pytorch(tmp_path, precision, atol, plugin):
    import torch

    from pgb_export.bert_graph import build as build_graph
    from pgb_export.grouped_linear import LinearOptions
    from pruning import repermute
    from tests.conftest import random_batches
    from tests.test_export_graph import CASES, plan_with, tiny_bert

    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    plan = plan_with(model, CASES["all grouped"])
    repermute.apply_plan(model, plan)
    graph = build_graph(model, plan, LinearOptions(plugin=plugin), np.float16 if precision == "fp16" else np.float32)
    engine, info = build(graph.SerializeToString(), EngineSpec(precision, 8, 32, 4, 16), tmp_path / "cache", plugin)
    assert info["precision"] == precision and (tmp_path / "cache").stat().st_size > 0
    with open_engine(engine, plugin) as run:
        for b in random_batches(2, 4, 10):
            feeds = {k: b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.no_grad():
                want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
            assert np.abs(run(feeds) - want).max() <= atol


def test_parity_shapes_stay_inside_the_profile():
    """TensorRT refuses a shape outside the engine's profile: parity must not feed one."""
    assert EngineSpec("fp16", 8, 32, 4, 16).parity_shapes() == ([1, 4], [16])
    assert EngineSpec("fp16", 32, 128, 16, 64).parity_shapes() == ([1, 4, 16], [16, 64, 128])

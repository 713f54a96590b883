"""Latency of exported graphs on a GPU: TensorRT engines (fp16, strongly typed, built through
polygraphy) and ONNX Runtime's CUDA execution provider, dense against PGB 0.5 (G=2 in every
matrix) and PGB 0.88 (G=8), at batch 1 and 32, sequence 128, on BERT-base and MiniLM-L6
shapes with random weights: speed depends on the plan's structure, not on the weights'
values. Each graph's logits are compared with PyTorch's before it is timed.

Each backend is used only where it is there: TensorRT where `tensorrt` imports (plus the
pgb::GroupedLinear plugin variant), the CUDA provider where onnxruntime-gpu offers it; what is
missing is written down as skipped, with the reason.

    .venv/bin/python scripts/bench_engines.py --out bench/engines.json
    .venv/bin/python scripts/bench_engines.py --smoke   # CPU: tiny model, ONNX Runtime's CPU
                                                        # provider; every code path, timings mean nothing
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgb_export import trt_engine  # noqa: E402
from pgb_export.bert_graph import build as build_graph, dense_plan  # noqa: E402
from pgb_export.bert_io import BERT_IO  # noqa: E402
from pgb_export.cli_common import table  # noqa: E402
from pgb_export.grouped_linear import LinearOptions  # noqa: E402
from pruning import bert, cost, repermute  # noqa: E402
from pruning.plan import uniform_plan  # noqa: E402

PLANS = {"dense": None, "PGB 0.5 (G=2)": 2, "PGB 0.88 (G=8)": 8}
BATCHES, SEQ = (1, 32), 128


def model_configs(smoke: bool) -> dict:
    from transformers import BertConfig
    if smoke:
        return {"tiny": BertConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=384)}
    return {"bert-base": BertConfig(),
            "minilm-l6": BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)}


def feeds(batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    g = np.random.default_rng(batch)
    return {"input_ids": g.integers(1000, min(vocab, 2000), (batch, seq)), "attention_mask": np.ones((batch, seq)),
            "token_type_ids": np.zeros((batch, seq))}


def timed(run, inputs, repeats: int) -> float:
    """Median milliseconds of run(inputs), host to host (int64 ids in, fp32 logits out)."""
    run(inputs)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(inputs)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


@contextlib.contextmanager
def _ort(graph: bytes, provider: str):
    import onnxruntime as ort
    sess = ort.InferenceSession(graph, providers=[provider])
    yield lambda f: sess.run(None, f)[0]


def backends(cache: Path, smoke: bool) -> dict:
    """name -> open(onnx_bytes, plugin), a context manager giving feeds -> logits; or the
    reason the backend is missing."""
    if smoke:
        return {"onnxruntime cpu fp16": lambda graph, plugin: _ort(graph, "CPUExecutionProvider")}
    out = {}
    try:
        trt_engine.require_tensorrt()
        spec = trt_engine.EngineSpec("fp16", max(BATCHES), SEQ, max(BATCHES), SEQ)

        def open_trt(graph: bytes, plugin: bool):
            engine, _ = trt_engine.build(graph, spec, cache, plugin=plugin)
            return trt_engine.open_engine(engine, plugin)
        out["tensorrt fp16"] = open_trt
    except trt_engine.TensorRTUnavailable as e:
        out["tensorrt fp16"] = str(e)
    try:
        import onnxruntime as ort
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ImportError("onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
        out["onnxruntime cuda fp16"] = lambda graph, plugin: _ort(graph, "CUDAExecutionProvider")
    except ImportError as e:
        out["onnxruntime cuda fp16"] = str(e)
    return out


def rows_for(name: str, cfg, plan_groups: int | None, opened: dict, batches, seq: int, repeats: int) -> list[dict]:
    from transformers import BertForSequenceClassification
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).eval()
    plan = dense_plan(model) if plan_groups is None else uniform_plan(bert.matrices(model), plan_groups)
    repermute.apply_plan(model, plan)
    flops = cost.flops_ratio(bert.matrices(model), plan.masks(), cfg.num_attention_heads, seq)
    rows = []
    for plugin in ((False,) if plan_groups is None else (False, True)):
        graph = build_graph(model, plan, LinearOptions(plugin=plugin), np.float16).SerializeToString()
        for backend, opener in opened.items():
            if plugin and not backend.startswith("tensorrt"):
                continue
            with opener(graph, plugin) as run:
                for batch in batches:
                    f = {k: v.astype(BERT_IO.input_dtype) for k, v in feeds(batch, seq, cfg.vocab_size).items()}
                    with torch.no_grad():
                        want = model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.numpy()
                    diff = float(np.abs(run(f) - want).max())
                    rows.append({"model": name, "plan": "dense" if plan_groups is None else f"G={plan_groups}",
                                 "plugin": plugin, "backend": backend, "batch": batch, "flops_ratio": flops,
                                 "max_abs_diff": diff, "ok": diff <= BERT_IO.atol_fp16,
                                 "ms": timed(run, f, repeats)})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/engines.json", help="JSON results (default bench/engines.json)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per case (median; default 50)")
    p.add_argument("--smoke", action="store_true", help="CPU run of every code path on a tiny model")
    args = p.parse_args()
    batches, seq, repeats = ((1, 2), 16, 1) if args.smoke else (BATCHES, SEQ, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        available = backends(Path(tmp) / "timing.cache", args.smoke)
        opened = {k: v for k, v in available.items() if callable(v)}
        skipped = {k: v for k, v in available.items() if not callable(v)}
        rows = [r for name, cfg in model_configs(args.smoke).items() for groups in PLANS.values()
                for r in rows_for(name, cfg, groups, opened, batches, seq, repeats)]
    dense = {(r["model"], r["backend"], r["batch"]): r["ms"] for r in rows if r["plan"] == "dense"}
    for r in rows:
        r["speedup"] = dense[(r["model"], r["backend"], r["batch"])] / r["ms"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
    result = {"device": device, "date": time.strftime("%Y-%m-%d"), "sequence": seq, "rows": rows, "skipped": skipped}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for backend, reason in skipped.items():
        print(f"skipped {backend}: {reason}")
    if rows:
        print(table(["model", "plan", "plugin", "backend", "batch", "ms", "speed-up", "ideal", "max |diff|"],
                    [[r["model"], r["plan"], "yes" if r["plugin"] else "", r["backend"], r["batch"], f"{r['ms']:.3f}",
                      f"{r['speedup']:.2f}x", f"{1 / r['flops_ratio']:.2f}x", f"{r['max_abs_diff']:.1e}"]
                     for r in rows]))
    print(f"wrote {args.out} on {device}")
    if not all(r["ok"] for r in rows):
        sys.exit("bench_engines: some graph's logits differ from PyTorch's beyond the fp16 tolerance (see rows)")


if __name__ == "__main__":
    main()

"""Closed-loop load on a served deploy directory: raw-text requests to pgb_text (or pgb_qa)
at each concurrency, over HTTP and gRPC, with Triton's dynamic batching on and off.

Each of C client threads sends its share of the requests one after another (a closed loop:
the next leaves when the answer is back). Every answer is checked against the one ONNX
Runtime gives locally for the same input (the deploy README's expected answer, computed the
same way); a wrong answer counts as an error. Prints one JSON line per configuration and a
table; exits 1 if any request failed.

    .venv/bin/python scripts/bench_triton_load.py runs/demo-deploy --requests 400

The tritonserver is the nvidia-pytriton wheel's (python backend only), so pgb_bert must have
been exported with --triton-backend python. perf_analyzer is not used: the perf-analyzer
wheel reachable here (0.1.0) is a placeholder without the binary.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgb_export.triton_server import TritonServer  # noqa: E402

SENTENCES = ["a charming and often affecting journey .", "unflinchingly bleak and desperate",
             "the acting , costumes , music , cinematography and sound are all astounding .",
             "it 's slow -- very , very slow .", "", "a " * 600]


def expected_labels(deploy: Path, texts: list[str]) -> list[str]:
    """What the export answers locally: its tokenizer (same truncation as pgb_tokenize), its
    model.onnx in ONNX Runtime, its id2label."""
    import onnxruntime as ort
    from tokenizers import Tokenizer
    from transformers import AutoConfig
    params = dict(re.findall(r'key: "(\w+)" value: \{ string_value: "([^"]*)" \}',
                             (deploy / "triton" / "pgb_tokenize" / "config.pbtxt").read_text()))
    tok = Tokenizer.from_file(str(deploy / "onnx" / "tokenizer.json"))
    tok.enable_truncation(int(params["max_len"]))
    tok.no_padding()
    sess = ort.InferenceSession(str(deploy / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    id2label = AutoConfig.from_pretrained(deploy / "onnx").id2label
    out = []
    for text in texts:
        e = tok.encode(text)
        feeds = {"input_ids": [e.ids], "attention_mask": [e.attention_mask], "token_type_ids": [e.type_ids]}
        logits = sess.run(None, {n: np.array(feeds[n], np.int64) for n in names})[0][0]
        out.append(f"{logits[0]:.6g}" if len(logits) == 1 else id2label[int(logits.argmax())])
    return out


def repository(deploy: Path, batching: bool, work: Path) -> Path:
    """The deploy's repository, or a copy with dynamic batching removed from every model."""
    if batching:
        return deploy / "triton"
    repo = work / "triton-nobatch"
    shutil.copytree(deploy / "triton", repo, symlinks=True)
    for config in repo.glob("*/config.pbtxt"):
        config.write_text(re.sub(r"dynamic_batching \{[^}]*\}\n", "", config.read_text()))
    return repo


def run_load(server: TritonServer, protocol: str, concurrency: int, requests: int, texts: list[str],
             want: list[str]) -> dict:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    module, url = (httpclient, server.http_url) if protocol == "http" else (grpcclient, server.grpc_url)
    latencies, errors, lock = [], [], threading.Lock()

    def worker(k: int) -> None:
        client = module.InferenceServerClient(url=url, **({"concurrency": 1} if protocol == "http" else {}))
        for i in range(k, requests, concurrency):
            text = texts[i % len(texts)]
            inp = module.InferInput("text", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            t0 = time.perf_counter()
            try:
                got = client.infer("pgb_text", [inp]).as_numpy("label")[0][0].decode()
                problem = None if got == want[i % len(texts)] else f"label {got!r} != {want[i % len(texts)]!r}"
            except Exception as e:  # every failure is counted, whatever the client raises
                problem = f"{type(e).__name__}: {e}"
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)
                if problem:
                    errors.append(problem)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"protocol": protocol, "concurrency": concurrency, "requests": len(latencies),
            "throughput_rps": round(len(latencies) / wall, 1),
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("deploy", type=Path, help="pgb-export --triton --triton-backend python output")
    p.add_argument("--requests", type=int, default=400, help="requests per configuration (default 400)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    p.add_argument("--batching", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--venv", type=Path, default=ROOT / ".venv-triton", help="environment of the tritonserver")
    args = p.parse_args()
    want = expected_labels(args.deploy, SENTENCES)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for batching in args.batching:
            with TritonServer(repository(args.deploy, batching == "on", Path(work)), args.venv) as server:
                for protocol in args.protocols:
                    run_load(server, protocol, 1, 8, SENTENCES, want)  # warm the client path
                    for c in args.concurrency:
                        row = {"batching": batching, **run_load(server, protocol, c, args.requests, SENTENCES, want)}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    print(f"\n{'batching':>8} {'protocol':>8} {'conc':>4} {'req':>5} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in rows:
        print(f"{r['batching']:>8} {r['protocol']:>8} {r['concurrency']:>4} {r['requests']:>5} {r['throughput_rps']:>7} "
              f"{r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>6}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

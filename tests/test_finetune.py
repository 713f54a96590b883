import dataclasses
import json

import pytest
import torch

from pruning import bert, budget, finetune, repermute
from tests.conftest import needs_shared, random_batches, tiny_bert
from tests.test_budget import fake_scores


def test_structure_stays_frozen_while_blocks_learn():
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    refs = bert.matrices(model)
    plan = budget.plan_pgb(refs, fake_scores(refs), 0.6, nperm=1)
    masks = repermute.apply_plan(model, plan)
    before = {r.name: bert.weight(model, r).clone() for r in refs}
    batches = random_batches(4, 8, 16)
    losses = finetune.finetune(model, lambda e: batches, 2, lr=1e-3, masks=masks, progress=False)
    assert len(losses) == 2
    assert repermute.violations(model, plan) == []
    changed = [r for r in refs if plan[r.name].groups and not torch.equal(bert.weight(model, r), before[r.name])]
    assert len(changed) == sum(1 for mp in plan.matrices if mp.groups)


@pytest.mark.parametrize("batches", [0, 1, 7, 63])
@pytest.mark.parametrize("epochs", [0.0, 0.1, 0.5, 1.0, 1.3, 2.75, 3.0])
def test_step_count_is_what_finetune_runs(batches, epochs):
    model = tiny_bert(hidden=48, layers=1, heads=4, ffn=96)
    ran = []
    model.register_forward_hook(lambda m, i, o: ran.append(1))
    data = random_batches(batches, 2, 6) if batches else []
    finetune.finetune(model, lambda e: data, epochs, progress=False)
    assert finetune.step_count(batches, epochs) == len(ran)
    # from rows: a last, partial batch is a step too
    assert finetune.recovery_steps(2 * batches, 2, epochs) == finetune.recovery_steps(max(0, 2 * batches - 1), 2, epochs) == len(ran)


@needs_shared
@pytest.mark.parametrize("task_name", ["rte", "stsb"])
def test_tune_embedded_saves_what_it_trained(tmp_path, task_name):
    """The embedded default and scripts/make_fixture.py share this step: a new head for the
    task, fine-tuned, and the directory holds exactly the weights that were trained."""
    from pruning import modeldir
    from pruning.pipeline import tune_embedded
    from pruning.tasks import get_task, glue_dir, load_split

    task = get_task(task_name)
    rows = load_split(task, "train", glue_dir(None)).examples[:16]
    model, _ = tune_embedded(task, rows, tmp_path / "m", epochs=1, lr=1e-3, batch_size=8, max_len=32,
                             seed=0, progress=False,
                             more_files=lambda m, tok: {"fixture.json": {"training": m.training, "vocab": len(tok)}})
    # written before the one rename, from the trained model in eval mode
    assert json.loads((tmp_path / "m" / "fixture.json").read_text()) == {"training": False, "vocab": 30522}
    saved, _ = modeldir.load(tmp_path / "m")
    assert saved.config.num_labels == task.num_labels
    assert (saved.config.problem_type == "regression") == task.is_regression
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    encoder, _ = modeldir.load(modeldir.embedded_encoder(), num_labels=task.num_labels, new_head=task.head)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(saved.state_dict()[name], encoder.state_dict()[name])  # two steps moved it
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert (report["rows"], report["epochs"], report["batch_size"], report["max_len"]) == (16, 1, 8, 32)
    torch.rand(1000)  # whatever ran before, the same seed gives the same model
    again, _ = tune_embedded(task, rows, tmp_path / "m2", epochs=1, lr=1e-3, batch_size=8, max_len=32,
                             seed=0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@needs_shared
def test_embedded_default_tunes_once_and_caches(tmp_path, monkeypatch):
    from pruning import pipeline
    from pruning.tasks import get_task, glue_dir, load_split

    monkeypatch.setenv("PGB_CACHE", str(tmp_path))
    monkeypatch.setattr(pipeline, "EMBEDDED_ROWS", 8)
    task = get_task("rte")
    train = load_split(task, "train", glue_dir(None)).examples
    opts = pipeline.PruneOptions(out=str(tmp_path / "out"), target=0.5, task="rte", batch_size=8,
                                 max_len=32, progress=False)
    path = pipeline.embedded_default(task, train, opts)
    assert path == pipeline.embedded_cache(task, opts) and path.parent == tmp_path
    assert path.name == "minilm-rte-8rows-len32-seed0-batch8-" + pipeline.pick_device("auto").type
    report = json.loads((path / "report.json").read_text())
    assert (report["rows"], report["epochs"], report["lr"], report["max_len"]) == (8, 1, pipeline.EMBEDDED_LR, 32)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert pipeline.embedded_default(task, train, opts) == path  # cached: not tuned again
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    other = pipeline.embedded_default(task, train, dataclasses.replace(opts, batch_size=4))
    assert other != path and (other / "model.safetensors").is_file()  # another batch size: tuned anew

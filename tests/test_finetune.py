import pytest
import torch

from pruning import bert, budget, finetune, repermute
from tests.conftest import random_batches, tiny_bert
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

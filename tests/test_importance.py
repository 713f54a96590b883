import torch

from pruning import bert, importance
from tests.conftest import random_batches, tiny_bert


def test_fisher_equals_brute_force_per_sample_gradients():
    model = tiny_bert(hidden=24, layers=2, heads=2, ffn=48)
    batches = random_batches(n_batches=2, batch=3)
    scores = importance.score(model, batches, progress=False)
    refs = bert.matrices(model)
    sq = {r.name: torch.zeros(r.shape) for r in refs}
    n = 0
    loss_fn = importance.task_loss(2)
    for b in batches:
        for i in range(len(b["labels"])):
            model.zero_grad()
            one = {k: v[i:i + 1] for k, v in b.items()}
            width = int(one["attention_mask"].sum())  # the sample alone, without padding
            inputs = {k: v[:, :width] for k, v in one.items() if k != "labels"}
            loss_fn(model(**inputs).logits, one["labels"]).sum().backward()
            for r in refs:
                sq[r.name] += bert.linear(model, r).weight.grad.T.square()
            n += 1
    for r in refs:
        expected = 0.5 * bert.weight(model, r).square() * sq[r.name] / n
        torch.testing.assert_close(scores[r.name], expected, rtol=1e-4, atol=1e-12)
        assert scores[r.name].shape == r.shape


def test_regression_loss_is_used_for_one_label():
    model = tiny_bert(hidden=24, layers=1, heads=2, ffn=48, labels=1)
    batches = random_batches(n_batches=1, batch=2)
    for b in batches:
        b["labels"] = b["labels"].float()
    scores = importance.score(model, batches, progress=False)
    assert all(s.sum() > 0 for s in scores.values())

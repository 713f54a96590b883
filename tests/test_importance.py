import pytest
import torch
from torch import nn
from transformers import BertForQuestionAnswering

from pruning import bert, importance
from tests.conftest import random_batches, tiny_bert


def _classification(model, one):
    return nn.functional.cross_entropy(model(**one).logits, one["labels"])


def _span(model, one):
    out = model(**one)
    return (nn.functional.cross_entropy(out.start_logits, one["start_positions"])
            + nn.functional.cross_entropy(out.end_logits, one["end_positions"])) / 2


def _qa_model():
    dense = tiny_bert(hidden=24, layers=2, heads=2, ffn=48)
    model = BertForQuestionAnswering(dense.config)
    model.bert.load_state_dict(dense.bert.state_dict(), strict=False)
    return model.eval()


@pytest.mark.parametrize("head", ["classification", "question-answering"])
def test_fisher_equals_brute_force_per_sample_gradients(head):
    """The per-sample gradients from hooks equal those of one sample at a time, each
    without padding, through the head's own loss (as transformers defines it)."""
    if head == "classification":
        model, loss = tiny_bert(hidden=24, layers=2, heads=2, ffn=48), _classification
        batches = random_batches(n_batches=2, batch=3)
    else:
        model, loss = _qa_model(), _span
        batches = random_batches(n_batches=2, batch=3)
        g = torch.Generator().manual_seed(3)
        for b in batches:
            del b["labels"]
            b["start_positions"] = torch.randint(0, 6, (3,), generator=g)  # inside every row's tokens
            b["end_positions"] = b["start_positions"] + torch.randint(0, 3, (3,), generator=g)
    scores = importance.score(model, batches, progress=False)
    refs = bert.matrices(model)
    sq = {r.name: torch.zeros(r.shape) for r in refs}
    n = 0
    for b in batches:
        for i in range(len(b["input_ids"])):
            model.zero_grad()
            one = {k: v[i:i + 1] for k, v in b.items()}
            width = int(one["attention_mask"].sum())  # the sample alone, without padding
            one.update({k: one[k][:, :width] for k in ("input_ids", "attention_mask", "token_type_ids")})
            loss(model, one).backward()
            for r in refs:
                sq[r.name] += bert.linear(model, r).weight.grad.T.square()
            n += 1
    for r in refs:
        expected = 0.5 * bert.weight(model, r).square() * sq[r.name] / n
        torch.testing.assert_close(scores[r.name], expected, rtol=1e-4, atol=1e-12)
        assert scores[r.name].shape == r.shape

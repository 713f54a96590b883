"""Distillation from the dense teacher: the soft loss is zero exactly when the student agrees,
ignores padding for per-token heads, uses MSE for regression; the teacher's outputs attached
to each row equal the model's on that row alone."""
from types import SimpleNamespace

import pytest
import torch

from pruning.batching import make_batches, model_args
from pruning.distillation import Distillation, attach_teacher
from pruning.heads import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION
from tests.conftest import random_batches, tiny_bert
from tests.test_question_answering import tiny_qa


def test_soft_loss_is_zero_exactly_when_the_student_agrees():
    d = Distillation(alpha=1.0, temperature=2.0)
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    batch = {"teacher_logits": logits.clone(), "attention_mask": torch.ones(2, 5)}
    task = torch.tensor([7.0, 7.0])
    assert torch.allclose(d.loss(SEQUENCE_CLASSIFICATION, SimpleNamespace(logits=logits), batch, task), torch.zeros(2), atol=1e-6)
    worse = d.loss(SEQUENCE_CLASSIFICATION, SimpleNamespace(logits=logits.flip(-1)), batch, task)
    assert (worse > 0.1).all()
    half = Distillation(alpha=0.5).loss(SEQUENCE_CLASSIFICATION, SimpleNamespace(logits=logits), batch, task)
    assert torch.allclose(half, task / 2, atol=1e-6)  # the task loss keeps 1 - alpha
    reg = {"teacher_logits": torch.tensor([[1.0], [2.0]]), "attention_mask": torch.ones(2, 5)}
    assert torch.allclose(d.loss(SEQUENCE_CLASSIFICATION, SimpleNamespace(logits=torch.tensor([[1.5], [2.0]])), reg, task),
                          torch.tensor([0.25, 0.0]))
    # classes are never masked, even when there are as many as the batch has tokens
    short = {"teacher_logits": logits.clone(), "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])}
    moved = logits.clone()
    moved[0, 2] += 3.0
    assert d.loss(SEQUENCE_CLASSIFICATION, SimpleNamespace(logits=moved), short, task)[0] > 0.1


def test_per_token_soft_loss_ignores_padding():
    d = Distillation(alpha=1.0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    start, end = torch.randn(2, 5), torch.randn(2, 5)
    batch = {"teacher_start_logits": start.clone(), "teacher_end_logits": end.clone(), "attention_mask": mask}
    base = d.loss(QUESTION_ANSWERING, SimpleNamespace(start_logits=start, end_logits=end), batch, torch.zeros(2))
    assert torch.allclose(base, torch.zeros(2), atol=1e-6)
    moved = start.clone()
    moved[0, 3:] += 50.0  # padding of row 0 only
    assert torch.allclose(d.loss(QUESTION_ANSWERING, SimpleNamespace(start_logits=moved, end_logits=end), batch,
                                 torch.zeros(2)),
                          torch.zeros(2), atol=1e-6)


@pytest.mark.parametrize("head", ["classification", "question-answering"])
def test_teacher_outputs_are_each_rows_own(head):
    model = tiny_bert(hidden=24, layers=2, heads=2, ffn=48) if head == "classification" else tiny_qa("bert")
    b = random_batches(n_batches=1, batch=4)[0]
    rows = [{k: b[k][i][:int(b["attention_mask"][i].sum())].tolist() for k in ("input_ids", "attention_mask",
                                                                            "token_type_ids")} for i in range(4)]
    rows = attach_teacher(model, rows, batch_size=3)
    names = ("logits",) if head == "classification" else ("start_logits", "end_logits")
    for row in rows:
        alone = {k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            out = model(**alone)
        for n in names:
            assert torch.allclose(torch.tensor(row[f"teacher_{n}"]), getattr(out, n)[0], atol=1e-5)
    batch = make_batches(rows, 4)[0]
    for n in names:
        assert batch[f"teacher_{n}"].shape[0] == 4
        if head != "classification":
            assert batch[f"teacher_{n}"].shape == batch["input_ids"].shape


def test_hidden_loss_is_relative_and_ignores_padding():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    teacher = [torch.randn(2, 3, 4) for _ in range(3)]
    student = [t.clone() for t in teacher]
    assert torch.equal(Distillation.hidden_loss(student, teacher, mask), torch.zeros(2))
    student[1][0, 2] += 100.0  # padding of row 0
    assert torch.equal(Distillation.hidden_loss(student, teacher, mask), torch.zeros(2))
    scaled = [2 * t for t in teacher]  # every layer off by its own size: relative error 1
    assert torch.allclose(Distillation.hidden_loss(scaled, teacher, mask), torch.ones(2))
    tenfold = [10 * t for t in teacher]
    assert torch.allclose(Distillation.hidden_loss([2 * t for t in tenfold], tenfold, mask), torch.ones(2))


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_finetune_with_the_hidden_loss_draws_layers_towards_the_teacher(family):
    """A student that starts as the teacher with noise on layer 0's FFN2 moves back towards the
    teacher's layer outputs with the hidden loss; at equal steps without it, it stays further."""
    import copy

    from pruning import bert, finetune
    from tests.test_families import batches, tiny

    teacher = tiny(family)
    rows = []
    for i, b in enumerate(batches(family, n=2, size=8)):
        labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(i))
        rows += [{k: b[k][j].tolist() for k in b} | {"labels": int(labels[j])} for j in range(8)]
    rows = attach_teacher(teacher, rows)
    whole = make_batches(rows, len(rows))[0]
    args = model_args(teacher, whole)

    def gap(student):
        with torch.no_grad():
            s = student(**args, output_hidden_states=True).hidden_states
            t = teacher(**args, output_hidden_states=True).hidden_states
        return float(Distillation.hidden_loss(s, t, whole["attention_mask"]).mean())

    after = {}
    for beta in (0.0, 1.0):
        student = copy.deepcopy(teacher)
        ref = next(r for r in bert.matrices(student) if r.kind == "ffn2" and r.layer == 0)
        w = bert.linear(student, ref).weight
        with torch.no_grad():
            w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
        start = gap(student)
        finetune.finetune(student, lambda e: make_batches(rows, 8, True, e), 4, lr=1e-3, progress=False,
                          distill=Distillation(0.5, 2.0, beta), teacher=teacher)
        after[beta] = gap(student)
    assert start > 0.01
    assert after[1.0] < 0.5 * min(start, after[0.0])
    with pytest.raises(ValueError, match="teacher"):
        finetune.finetune(copy.deepcopy(teacher), lambda e: make_batches(rows, 8), 1, progress=False,
                          distill=Distillation(0.5, 2.0, 1.0))

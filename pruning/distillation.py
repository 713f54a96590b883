"""Knowledge distillation during re-finetuning (step 7): the dense model is the teacher.

Its outputs on the re-finetuning rows are computed once, before pruning, and stored with each
row, so shuffling and epochs cost nothing more. The student's loss mixes the task loss with
a soft one: KL(teacher || student) of the temperature-softened distributions, times T^2 so
that its gradients keep their scale (the MSE of the outputs for regression); for question
answering the start and end distributions over the attended tokens, averaged.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .batching import make_batches, model_args, on_device
from .heads import Head, head_named

PREFIX = "teacher_"  # batch keys holding the teacher's outputs


@dataclass(frozen=True)
class Distillation:
    alpha: float = 0.5  # weight of the soft loss; 1 - alpha on the task loss
    temperature: float = 2.0

    def loss(self, head: Head, out, batch: dict, task_loss: torch.Tensor) -> torch.Tensor:
        """Per-sample mixed loss over the head's outputs; `task_loss` is the head's own, per
        sample."""
        soft = torch.stack([self._soft(head, student, batch[PREFIX + name], batch)
                            for name, student in zip(head.outputs, head.outputs_of(out))]).mean(0)
        return (1 - self.alpha) * task_loss + self.alpha * soft

    def _soft(self, head: Head, student: torch.Tensor, teacher: torch.Tensor, batch: dict) -> torch.Tensor:
        if not head.per_token and student.shape[-1] == 1:  # regression
            return (student - teacher).square().squeeze(-1)
        t = self.temperature
        if head.per_token:  # a distribution over the tokens: padding is no candidate
            padding = batch["attention_mask"] == 0
            student = student.masked_fill(padding, torch.finfo(student.dtype).min)
            teacher = teacher.masked_fill(padding, torch.finfo(teacher.dtype).min)
        log_p = nn.functional.log_softmax(student / t, -1)
        q = nn.functional.softmax(teacher / t, -1)
        return (q * (torch.log(q.clamp_min(1e-30)) - log_p)).sum(-1) * t * t


@torch.no_grad()
def attach_teacher(model: nn.Module, encoded: Sequence[dict], batch_size: int = 64, pad_id: int = 0) -> list[dict]:
    """`encoded` rows with the (dense) model's outputs added under teacher_<output>; per-token
    outputs are cut to the row's own length."""
    model.eval()
    head = head_named(model)
    out_rows = []
    for start in range(0, len(encoded), batch_size):
        rows = encoded[start:start + batch_size]
        batch = on_device(model, make_batches(rows, len(rows), pad_id=pad_id)[0])
        values = head.outputs_of(model(**model_args(model, batch)))
        for i, row in enumerate(rows):
            extra = {}
            for name, v in zip(head.outputs, values):
                v = v[i, :len(row["input_ids"])] if head.per_token else v[i]
                extra[PREFIX + name] = v.float().tolist()
            out_rows.append({**row, **extra})
    return out_rows

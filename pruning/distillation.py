"""Knowledge distillation during re-finetuning (step 7): the dense model is the teacher.

Its outputs on the re-finetuning rows are computed once, before pruning, and stored with each
row, so shuffling and epochs cost nothing more. The student's loss mixes the task loss with
a soft one: KL(teacher || student) of the temperature-softened distributions, times T^2 so
that its gradients keep their scale (the MSE of the outputs for regression); for question
answering the start and end distributions over the attended tokens, averaged.

Optionally the student's layer outputs are drawn towards the teacher's too (`hidden`): those
cannot be cached (a 6-layer MiniLM's are 2 MB per row), so the teacher then runs beside the
student on every batch, about a third more time per step.
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
    hidden: float = 0.0  # weight of hidden_loss, added on top; needs the teacher model online

    def loss(self, head: Head, out, batch: dict, task_loss: torch.Tensor) -> torch.Tensor:
        """Per-sample mixed loss over the head's outputs; `task_loss` is the head's own, per
        sample."""
        soft = torch.stack([self._soft(head, student, batch[PREFIX + name], batch)
                            for name, student in zip(head.outputs, head.outputs_of(out))]).mean(0)
        return (1 - self.alpha) * task_loss + self.alpha * soft

    @staticmethod
    def hidden_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                    attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-sample squared error of every layer's output relative to the teacher's (the
        embeddings, which pruning leaves alone, included), over the attended tokens, averaged
        over layers. Relative, so that its weight means the same on any width or family."""
        mask = attention_mask.unsqueeze(-1).to(student[0].dtype)
        per_layer = [((s - t).square() * mask).sum((1, 2)) / (t.square() * mask).sum((1, 2)).clamp_min(1e-12)
                     for s, t in zip(student, teacher)]
        return torch.stack(per_layer).mean(0)

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


def distillation(alpha: float, temperature: float, hidden: float = 0.0) -> Distillation | None:
    """The run's distillation, or None when both weights are zero."""
    return Distillation(alpha, temperature, hidden) if alpha or hidden else None


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

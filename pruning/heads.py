"""Task heads, as data: which transformers class holds each, what its ONNX outputs are, and
its per-sample loss over the batch's targets (importance scoring and re-finetuning both use
it). Where each family keeps a head's weights is the family's
(pruning.families); how a task turns the outputs into its metric is the task's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

# (model outputs, batch) -> loss of each sample, shape (B,)
Loss = Callable[[object, Mapping[str, torch.Tensor]], torch.Tensor]


def _classification_loss(out, batch) -> torch.Tensor:
    """What transformers trains a sequence classifier with: MSE for one output, else CE."""
    logits, y = out.logits, batch["labels"]
    if logits.shape[-1] == 1:
        return (logits.squeeze(-1) - y.float()).square()
    return nn.functional.cross_entropy(logits, y, reduction="none")


def _span_loss(out, batch) -> torch.Tensor:
    """Mean of the start and end cross-entropies, as transformers' QA heads compute it, but
    over attended tokens only: transformers' softmax also spans the padding, which would make
    a sample's loss (and its Fisher) depend on the batch it was padded in."""
    padding = batch["attention_mask"] == 0
    losses = []
    for logits, key in ((out.start_logits, "start_positions"), (out.end_logits, "end_positions")):
        logits = logits.masked_fill(padding, torch.finfo(logits.dtype).min)
        losses.append(nn.functional.cross_entropy(logits, batch[key], reduction="none"))
    return (losses[0] + losses[1]) / 2


@dataclass(frozen=True)
class Head:
    name: str  # the transformers pipeline tag
    architecture: str  # config.architectures suffix, e.g. "ForSequenceClassification"
    auto_class: str  # the transformers Auto class that loads it
    outputs: tuple[str, ...]  # ONNX output names = the model output's attributes, in order
    per_token: bool  # outputs are (batch, sequence) rather than (batch, num_labels)
    loss: Loss
    max_len: int  # default tokens per input (question answering: per window)

    def output_dims(self, num_labels: int, sequence: int | str = -1) -> list:
        """Each output's shape after the batch axis; `sequence` names the sequence axis."""
        return [sequence] if self.per_token else [num_labels]

    def outputs_of(self, out) -> list[torch.Tensor]:
        return [getattr(out, name) for name in self.outputs]


SEQUENCE_CLASSIFICATION = Head("text-classification", "ForSequenceClassification",
                               "AutoModelForSequenceClassification", ("logits",), False,
                               _classification_loss, 128)
QUESTION_ANSWERING = Head("question-answering", "ForQuestionAnswering", "AutoModelForQuestionAnswering",
                          ("start_logits", "end_logits"), True, _span_loss, 384)
HEADS = (SEQUENCE_CLASSIFICATION, QUESTION_ANSWERING)


class UnsupportedHead(ValueError):
    """The checkpoint holds a head that is not in the registry."""


def head_of(architectures: list[str] | None) -> Head:
    """The head a config.json's `architectures` names; a checkpoint that names none is taken
    for a sequence classifier, as transformers' Auto classes would."""
    if not architectures:
        return SEQUENCE_CLASSIFICATION
    for head in HEADS:
        if any(str(a).endswith(head.architecture) for a in architectures):
            return head
    raise UnsupportedHead(f"holds a {architectures[0]!s:.60}; supported heads are "
                          + ", ".join(f"*{h.architecture}" for h in HEADS))


def head_named(model: nn.Module) -> Head:
    """The head of a loaded model, from its class name."""
    return head_of([type(model).__name__])

"""Tokenised examples -> padded batches -> model outputs -> task metrics.

A batch is a dict: the model's inputs (padded tensors), its training targets (tensors) and,
for tasks that decode their outputs (question answering), per-row metadata (lists). Each
consumer takes the keys it needs: `model_args` says which.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from numbers import Number

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .families import family
from .heads import head_named
from .tasks import Example

PADDED = ("input_ids", "attention_mask", "token_type_ids")


def encode(tokenizer, examples: Sequence[Example], max_len: int = 128,
           inputs: Sequence[str] = PADDED) -> list[dict]:
    """Sentence (pair) classification examples, tokenised, with only the model's `inputs`
    (a DistilBERT tokenizer may still emit token_type_ids, which its model does not take)."""
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(a, b, truncation=True, max_length=max_len)
    keys = [k for k in inputs if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": e.label} for i, e in enumerate(examples)]


def make_batches(encoded: Sequence[dict], batch_size: int = 32, shuffle: bool = False,
                 seed: int = 0, pad_id: int = 0) -> list[dict]:
    """Pad each batch to its own longest sequence (dynamic padding): input_ids with the
    tokenizer's pad id (RoBERTa's is 1), the mask and token types with 0. Numbers become
    tensors (float labels: regression); anything else stays a list."""
    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        items = [encoded[i] for i in order[start:start + batch_size]]
        width = max(len(it["input_ids"]) for it in items)
        batch = {}
        for k in items[0]:
            values = [it[k] for it in items]
            if k in PADDED:
                fill = pad_id if k == "input_ids" else 0
                batch[k] = torch.tensor([v + [fill] * (width - len(v)) for v in values])
            elif isinstance(values[0], list) and values[0] and isinstance(values[0][0], float):
                # float vectors (a teacher's outputs): per row, or per token and padded with 0
                size = max(len(v) for v in values)
                batch[k] = torch.tensor([v + [0.0] * (size - len(v)) for v in values])
            elif isinstance(values[0], Number):
                batch[k] = torch.tensor(values, dtype=torch.float32 if isinstance(values[0], float) else torch.long)
            else:
                batch[k] = values
        batches.append(batch)
    return batches


def first_rows(batches: Sequence[dict], rows: int) -> list[dict]:
    """The leading batches that hold at least `rows` rows (all of them if they hold fewer)."""
    out, held = [], 0
    for b in batches:
        if held >= rows:
            break
        out.append(b)
        held += len(b["input_ids"])
    return out


def model_args(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """The keys of `batch` the model's forward takes."""
    return {k: batch[k] for k in family(model).inputs if k in batch}


def on_device(model: nn.Module, batch: dict) -> dict:
    """`batch` with its tensors on the model's device: batches are built and kept on the CPU
    (task metrics read their labels there), and each step moves the one it runs."""
    device = next(model.parameters()).device
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def predict(model: nn.Module, batches: Sequence[dict], progress: bool = False) -> list[dict[str, np.ndarray]]:
    """The head's outputs for each batch, by output name."""
    model.eval()
    head = head_named(model)
    return [dict(zip(head.outputs, (t.float().cpu().numpy()
                                    for t in head.outputs_of(model(**model_args(model, on_device(model, b)))))))
            for b in tqdm(batches, desc="predict", disable=not progress, unit="batch")]


def evaluate(model: nn.Module, task, batches: Sequence[dict], progress: bool = False) -> dict[str, float]:
    return task.score(predict(model, batches, progress), batches)

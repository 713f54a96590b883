"""Tokenised examples -> padded batches -> predictions and task metrics."""
from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .tasks import Example, Task, metrics


def encode(tokenizer, examples: Sequence[Example], max_len: int = 128,
           inputs: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids")) -> list[dict]:
    """Tokenised examples with only the model's `inputs` (a DistilBERT tokenizer may still
    emit token_type_ids, which its model does not take)."""
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(a, b, truncation=True, max_length=max_len)
    keys = [k for k in inputs if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": e.label} for i, e in enumerate(examples)]


def make_batches(encoded: Sequence[dict], batch_size: int = 32, shuffle: bool = False,
                 seed: int = 0, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    """Pad each batch to its own longest sequence (dynamic padding): input_ids with the
    tokenizer's pad id (RoBERTa's is 1), the mask and token types with 0."""
    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        items = [encoded[i] for i in order[start:start + batch_size]]
        width = max(len(it["input_ids"]) for it in items)
        batch = {k: torch.tensor([it[k] + [pad_id if k == "input_ids" else 0] * (width - len(it[k])) for it in items])
                 for k in items[0] if k != "labels"}
        labels = [it["labels"] for it in items]
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], float)
                                       else torch.long)
        batches.append(batch)
    return batches


@torch.no_grad()
def predict(model: nn.Module, batches: Sequence[dict], progress: bool = False) -> np.ndarray:
    model.eval()
    out = [model(**{k: v for k, v in b.items() if k != "labels"}).logits.float().numpy()
           for b in tqdm(batches, desc="predict", disable=not progress, unit="batch")]
    return np.concatenate(out)


def evaluate(model: nn.Module, task: Task, batches: Sequence[dict],
             progress: bool = False) -> dict[str, float]:
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    return metrics(task, predict(model, batches, progress), labels)

"""Step 7: re-finetuning with the structure frozen (PGB.md section 7).

Plain fine-tuning (AdamW, linear decay after warm-up). With masks, every prunable weight
outside its mask is multiplied back to exactly zero after each optimizer step, so blocks
stay blocks and dropped matrices stay dropped. The same function fine-tunes a dense model
(masks=None), which is how the embedded default gets its task head.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm import tqdm

from . import bert
from .batching import model_args, on_device
from .heads import head_named


def _last_epoch_steps(batches: int, epochs: float) -> int:
    """Batches run in the fractional last epoch of `epochs` (at least one)."""
    return max(1, round((epochs - int(epochs)) * batches))


def step_count(batches_per_epoch: int, epochs: float) -> int:
    """How many optimizer steps `finetune` takes over `epochs` of that many batches."""
    if batches_per_epoch == 0:
        return 0
    whole = int(epochs)
    return whole * batches_per_epoch + (min(batches_per_epoch, _last_epoch_steps(batches_per_epoch, epochs))
                                        if epochs > whole else 0)


def recovery_steps(rows: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of re-finetuning on `rows` rows in batches of `batch_size`."""
    return step_count(-(-rows // batch_size), epochs)


def finetune(model: nn.Module, epoch_batches: Callable[[int], Sequence[dict]], epochs: float,
             lr: float = 3e-5, masks: Mapping[str, torch.Tensor] | None = None,
             weight_decay: float = 0.01, warmup: float = 0.1, seed: int = 0,
             progress: bool = True, distill=None, teacher: nn.Module | None = None) -> list[float]:
    """Train `model` in place; `epoch_batches(e)` gives epoch e's batches (with the head's
    targets), on the head's loss (pruning.heads), the one importance scoring uses.

    A fractional `epochs` (0.5) runs that share of the last epoch's batches. With `distill`
    (pruning.distillation.Distillation) the batches carry the teacher's outputs and the loss
    mixes them in; with `distill.hidden` the `teacher` model runs beside the student and its
    layer outputs are matched too. Returns the mean training loss of each epoch.
    """
    hidden = bool(distill and distill.hidden)
    if hidden and teacher is None:
        raise ValueError("distillation of the hidden states needs the teacher model")
    torch.manual_seed(seed)
    weights = {}
    if masks is not None:
        weights = {r.name: bert.linear(model, r).weight for r in bert.matrices(model)}
    plan = []
    whole = int(epochs)
    for e in range(whole + (epochs > whole)):
        batches = epoch_batches(e)
        plan.append(batches if e < whole else batches[:_last_epoch_steps(len(batches), epochs)])
    total = sum(len(b) for b in plan)
    if total == 0:
        return []
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warm = max(1, int(warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    head = head_named(model)
    model.train()
    losses = []
    bar = tqdm(total=total, desc="finetune", disable=not progress, unit="step")
    for batches in plan:
        running = 0.0
        for batch in batches:
            batch = on_device(model, batch)
            out = model(**model_args(model, batch), output_hidden_states=hidden)
            loss = head.loss(out, batch)
            loss = distill.loss(head, out, batch, loss) if distill else loss
            if hidden:
                with torch.no_grad():
                    taught = teacher(**model_args(teacher, batch), output_hidden_states=True)
                loss = loss + distill.hidden * distill.hidden_loss(out.hidden_states, taught.hidden_states,
                                                                   batch["attention_mask"])
            loss = loss.mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if masks is not None:
                with torch.no_grad():
                    for name, w in weights.items():
                        w.mul_(masks[name].T.to(w))
            running += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(running / max(1, len(batches)))
    bar.close()
    model.eval()
    return losses

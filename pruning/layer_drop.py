"""Which whole sub-layers to drop, decided by measurement (the `measured` allocation; our
resolution of PGB.md section 10 beyond the paper's Algorithm 1).

Algorithm 1 drops FFN layers in order of summed saliency, which is not comparable across
layers, and never drops an attention sub-layer on purpose. Here:
1. the cost of each sub-layer (a layer's attention: W_Q, W_K, W_V, W_O; or its FFN: W_1,
   W_2) is the calibration loss of the dense model with that sub-layer's weights zeroed
   (biases stay, as in every dropped matrix), minus the dense model's;
2. for k = 0 .. max_drops, the k cheapest sub-layers are dropped (among those the plan
   without drops keeps: one the budget already empties would change nothing), the floor
   allocation spreads the budget over the rest (`budget.plan_pgb(..., drop=...)`), the model
   is compensated to that plan on a few samples, and its calibration loss is measured;
3. the k with the lowest loss wins, among the plans that land on the target (dropping too
   much leaves matrices that cannot hold the budget even dense; those are not measured).
Calibration rows are training rows the importance samples did not use, never the dev set
the metrics are reported on. A dropped sub-layer also removes its unprunable work (softmax,
GELU) from the exported graph, which grouping cannot.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from . import bert, compensation
from .batching import first_rows, model_args, on_device
from .heads import head_named
from .budget import TOLERANCE
from .plan import Plan

MAX_DROPS = 4  # candidates k = 0..4: a sixth of a 6-layer model's sub-layers at most beyond the floors
COMPENSATION_SAMPLES = 256  # per candidate: enough to rank plans, a tenth of the final compensation


@dataclass(frozen=True)
class Sublayer:
    layer: int
    part: str  # "attention" | "ffn"
    matrices: frozenset[str]

    def name(self) -> str:
        return f"{self.part} {self.layer}"


def sublayers(refs: Sequence[bert.MatrixRef]) -> list[Sublayer]:
    parts = {}
    for r in refs:
        part = "attention" if r.kind in bert.MHA_KINDS else "ffn"
        parts.setdefault((r.layer, part), set()).add(r.name)
    return [Sublayer(layer, part, frozenset(names)) for (layer, part), names in sorted(parts.items())]


@torch.no_grad()
def calibration_loss(model: nn.Module, batches: Sequence[dict]) -> float:
    """Mean per-sample task loss (the head's own) over `batches`."""
    model.eval()
    head = head_named(model)
    total = 0.0
    for b in batches:
        b = on_device(model, b)
        total += float(head.loss(model(**model_args(model, b)), b).sum())
    return total / max(1, sum(len(b["input_ids"]) for b in batches))


class _Weights:
    """The prunable weights as they are now, to put back after each trial."""

    def __init__(self, model: nn.Module, refs: Sequence[bert.MatrixRef]):
        self.model, self.refs = model, refs
        self.saved = {r.name: bert.linear(model, r).weight.detach().clone() for r in refs}

    @torch.no_grad()
    def restore(self) -> None:
        for r in self.refs:
            bert.linear(self.model, r).weight.copy_(self.saved[r.name])


def drop_costs(model: nn.Module, refs: Sequence[bert.MatrixRef], held: Sequence[dict],
               progress: bool = False) -> dict[Sublayer, float]:
    """Calibration loss increase when each sub-layer alone is dropped."""
    weights = _Weights(model, refs)
    base = calibration_loss(model, held)
    costs = {}
    by_name = {r.name: r for r in refs}
    for s in tqdm(sublayers(refs), desc="sub-layer costs", disable=not progress, unit="sub-layer"):
        with torch.no_grad():
            for name in s.matrices:
                bert.linear(model, by_name[name]).weight.zero_()
        costs[s] = calibration_loss(model, held) - base
        weights.restore()
    return costs


def choose(model: nn.Module, refs: Sequence[bert.MatrixRef], plan_for: Callable[[frozenset[str]], Plan],
           samples: Sequence[dict], held: Sequence[dict], max_drops: int = MAX_DROPS,
           progress: bool = False, compensation_mode: str = "dense",
           masks_of: Callable[[Plan], dict[str, torch.Tensor]] = Plan.masks) -> tuple[frozenset[str], dict]:
    """(matrices to drop, report): the drop set among the k cheapest sub-layers whose
    plan, pruned to `masks_of(plan)` and compensated as the run will be (`compensation_mode`),
    has the lowest calibration loss on `held`. `plan_for(drop)` is the plan at the target with
    those matrices dropped; `model` is left as it came."""
    costs = drop_costs(model, refs, held, progress)
    # a sub-layer the budget already empties costs nothing to drop and changes no plan: the
    # candidates are the ones the undropped plan keeps, cheapest first
    by_cost = sorted(costs, key=costs.get)
    empty = {m.name for m in plan_for(frozenset()).matrices if m.groups == 0}
    emptied = [s for s in by_cost if s.matrices <= empty]
    order = [s for s in by_cost if s not in emptied]
    weights = _Weights(model, refs)
    few = first_rows(samples, COMPENSATION_SAMPLES)
    trials = []
    for k in tqdm(range(min(max_drops, len(order)) + 1), desc="layer drops", disable=not progress, unit="plan"):
        drop = frozenset().union(*(s.matrices for s in order[:k]))
        plan = plan_for(drop)
        trial = {"drops": k, "sublayers": [s.name() for s in order[:k]], "achieved_ratio": plan.ratio,
                 "calibration_loss": None, "drop": drop}
        trials.append(trial)
        if abs(plan.ratio - plan.meta["target"]) > TOLERANCE:  # what is left cannot hold the budget
            continue
        compensation.compensate(model, masks_of(plan), few, progress=False, mode=compensation_mode)
        trial["calibration_loss"] = calibration_loss(model, held)
        weights.restore()
    best = min((t for t in trials if t["calibration_loss"] is not None), key=lambda t: t["calibration_loss"],
               default=trials[0])
    report = {"sublayer_costs": {s.name(): costs[s] for s in by_cost},
              "emptied_by_budget": [s.name() for s in emptied],
              "trials": [{k: v for k, v in t.items() if k != "drop"} for t in trials],
              "chosen_drops": best["sublayers"], "calibration_rows": sum(len(b["input_ids"]) for b in held),
              "compensation_samples": sum(len(b["input_ids"]) for b in few)}
    return best["drop"], report

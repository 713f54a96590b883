"""Step 4: the budget, paper Algorithm 1 (PGB.md section 4).

MHA phase: every attention matrix gets its adaptive G. FFN phase: layers in order of FFN
importance get their adaptive G while budget remains; the last one taken may use a larger
G to land on the target, and the FFN of every layer never taken is dropped.

The budget counts live weights only (our resolution beyond the paper): when the rule drops
W_V or W_O, the layer's attention is a constant and its W_Q, W_K (and the other of W_V, W_O)
are dead, so all four are dropped and charge nothing; likewise an FFN whose W_1 or W_2 the
rule drops is dropped whole. The budget they would have held goes to live matrices, and the
plan's kept count is what the exporter stores.

`Ties` (opt-in, beyond the paper) make matrices of a layer share one permutation, so that an
export copies an activation fewer times, at the cost of some captured importance:
- qkv: W_Q, W_K and W_V read the same input, and each grouped one needs that input permuted
  into its own row chunks. Tied, the grouped ones get one G and one row permutation, so the
  input is permuted once instead of up to three times.
- ffn: W_1's columns and W_2's rows are the same neurons. Tied, a grouped pair gets one G and
  one neuron partition (W_1's column permutation is W_2's row permutation), so block i of
  FFN1 feeds block i of FFN2 and the exchange between them goes away.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .bert import FFN_KINDS, MHA_KINDS, MatrixRef
from .grouping import common_divisors, group_count, permute_and_group_shared
from .plan import MatrixPlan, Plan

TOLERANCE = 0.01  # achieved ratio must land within +-1 point of the target
QKV = MHA_KINDS[:3]  # the projections that read the attention sub-layer's input
# paper: Algorithm 1 as written. floor: no matrix is dropped while every matrix can keep its
# floor (the largest G within G_max); budget above the floors goes, in the paper's order
# (attention, then FFN layers by importance), towards each matrix's rule G.
ALLOCATIONS = ("paper", "floor")


@dataclass(frozen=True)
class Ties:
    """Which matrices of a layer share a permutation (module docstring); none by default."""

    qkv: bool = False
    ffn: bool = False

    def tie_of(self, kind: str) -> str | None:
        """The tie a matrix of this kind belongs to, if that tie is on."""
        if self.qkv and kind in QKV:
            return "qkv"
        if self.ffn and kind in FFN_KINDS:
            return "ffn"
        return None

    def transposed(self, kind: str) -> bool:
        """Whether a tied matrix of this kind is searched transposed: the FFN tie's W_1, whose
        columns are the neurons W_2's rows hold (Q, K and V share their rows as they are)."""
        return self.tie_of(kind) == "ffn" and kind == FFN_KINDS[0]

    def meta(self) -> dict:
        return {"tie_qkv": self.qkv, "tie_ffn": self.ffn}


def auto_tau(scores: Mapping[str, torch.Tensor], kept: int) -> float:
    """The global score quantile with exactly `kept` weights above it (ties aside)."""
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    if kept <= 0:
        return float(flat.max())
    if kept >= flat.numel():  # every weight above tau, in float32 too
        low = float(flat.min())
        return low - abs(low) - 1.0
    return float(torch.kthvalue(flat, flat.numel() - kept).values)


def grouped_plan(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor],
                 groups: Mapping[str, int], nperm: int, permute: bool = True,
                 meta: dict | None = None, progress: bool = False, ties: Ties = Ties()) -> Plan:
    """Permutation search for every matrix at the G already decided for it; the tied members
    of a layer (`ties`) that share a G are searched together and share their permutation
    (`Ties.transposed` says which member is searched transposed)."""
    found = {}
    for members in tqdm(_searches(refs, groups, ties), desc="permutation", disable=not progress, unit="search"):
        flip = [len(members) > 1 and ties.transposed(r.kind) for r in members]
        pr, pcs, caps = permute_and_group_shared([scores[r.name].T if f else scores[r.name] for r, f in zip(members, flip)],
                                                 groups[members[0].name], nperm, permute)
        found.update({r.name: (pc, pr, cap) if f else (pr, pc, cap) for r, f, pc, cap in zip(members, flip, pcs, caps)})
    mats = [MatrixPlan(r.name, r.layer, r.kind, r.shape, groups[r.name], *found[r.name]) for r in refs]
    return Plan(mats, dict(meta or {}))


def _searches(refs: Sequence[MatrixRef], groups: Mapping[str, int], ties: Ties) -> list[list[MatrixRef]]:
    """The matrices searched together: one each, or the grouped members of a layer's tie
    with the same G as one search."""
    together: dict[tuple, list[MatrixRef]] = {}
    for r in refs:
        tie = ties.tie_of(r.kind)
        key = (r.layer, tie, groups[r.name]) if tie and groups[r.name] >= 2 else (r.name,)
        together.setdefault(key, []).append(r)
    return list(together.values())


def tie_groups(refs: Sequence[MatrixRef], groups: Mapping[str, int], gmax: int, ties: Ties) -> dict[str, int]:
    """One G for the grouped (G >= 2) members of each layer's tie: the common divisor whose
    kept count is closest to what they keep apart, the larger G when two are as close (dense
    and dropped members need no permutation and keep theirs)."""
    tied = dict(groups)
    together: dict[tuple, list[MatrixRef]] = {}
    for r in refs:
        tie = ties.tie_of(r.kind)
        if tie and groups[r.name] >= 2:
            together.setdefault((r.layer, tie), []).append(r)
    for members in together.values():
        if len(members) < 2:
            continue
        kept = sum(_kept(r, groups[r.name]) for r in members)
        options = [d for d in set.intersection(*(set(common_divisors(*r.shape)) for r in members)) if 2 <= d <= gmax]
        if options:
            g = min(options, key=lambda d: (abs(sum(_kept(r, d) for r in members) - kept), -d))
            tied.update({r.name: g for r in members})
    return tied


def _kept(ref: MatrixRef, g: int) -> int:
    return 0 if g == 0 else ref.shape[0] * ref.shape[1] // g


def _fit_last_layer(pair: Sequence[MatrixRef], rule: Sequence[int], budget: float,
                    gmax: int) -> tuple[int, int]:
    """G for the last FFN layer taken: skip it, or take it with G at or above the rule's,
    whichever lands closest to the remaining budget."""
    def choices(ref, g):
        return [0] if g == 0 else [d for d in common_divisors(*ref.shape) if g <= d <= gmax]
    options = [(0, 0)] + [(a, b) for a in choices(pair[0], rule[0]) for b in choices(pair[1], rule[1]) if a and b]
    return min(options, key=lambda ab: (abs(budget - _kept(pair[0], ab[0]) - _kept(pair[1], ab[1])),
                                        ab == (0, 0)))


def _ffn_layers(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor]) -> tuple[dict[int, list[MatrixRef]], list[int]]:
    """({layer: [W_1, W_2]}, layers by FFN importance, the sum of s over both, highest first)."""
    ffn: dict[int, list[MatrixRef]] = {}
    for r in refs:
        if r.kind in FFN_KINDS:
            ffn.setdefault(r.layer, []).append(r)
    importance = {l: sum(float(scores[r.name].sum()) for r in pair) for l, pair in ffn.items()}
    return ffn, sorted(ffn, key=lambda l: -importance[l])


def _algorithm1(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor], budget: float,
                gmax: int, rule: Mapping[str, int], drop: frozenset[str] = frozenset()
                ) -> tuple[dict[str, int], list[int], list[int], list[str]]:
    """MHA phase, then FFN layers by importance while budget remains. Returns (G per
    matrix, FFN layer order, FFN layers taken, notes). A forced drop is already rule 0."""
    groups: dict[str, int] = {}
    notes: list[str] = []
    constant = {r.layer for r in refs if r.kind in ("value", "attn_out") and rule[r.name] == 0}
    for r in refs:
        if r.kind in MHA_KINDS:
            groups[r.name] = 0 if r.layer in constant else rule[r.name]
            budget -= _kept(r, groups[r.name])
    if budget < 0:
        notes.append(f"MHA phase alone keeps {-budget:.0f} weights more than the budget")

    ffn, order = _ffn_layers(refs, scores)
    taken = []
    for layer in order:
        if budget <= 0:
            break
        pair = ffn[layer]
        g = [rule[r.name] for r in pair]
        if 0 in g:  # one of the two dropped: the FFN is a constant, both dead
            continue
        last = sum(_kept(r, gi) for r, gi in zip(pair, g)) > budget
        if last:
            g = list(_fit_last_layer(pair, g, budget, gmax))
        for r, gi in zip(pair, g):
            groups[r.name] = gi
            budget -= _kept(r, gi)
        if any(g):
            taken.append(layer)
        if last:
            break
    for pair in ffn.values():
        for r in pair:
            groups.setdefault(r.name, 0)
    return groups, order, taken, notes


def _floor(ref: MatrixRef, gmax: int) -> int:
    return max(d for d in common_divisors(*ref.shape) if d <= gmax)


def _floor_allocation(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor], budget: float,
                      gmax: int, rule: Mapping[str, int], drop: frozenset[str] = frozenset()
                      ) -> tuple[dict[str, int], list[int], list[int], list[str]]:
    """Every matrix keeps at least its floor; where the floors alone do not fit, the FFN
    floors of the least important layers go first (and say so). Then each matrix, attention
    first and FFN layers by importance, moves from its floor towards its rule G (0 = rule
    would drop it: the floor stays) as far as the budget left above the remaining floors allows."""
    notes: list[str] = []
    groups = {r.name: 0 if r.name in drop else _floor(r, gmax) for r in refs}
    ffn, order = _ffn_layers(refs, scores)
    spent = lambda: sum(_kept(r, groups[r.name]) for r in refs)
    for layer in reversed(order):  # least important FFN first, until the floors fit
        if spent() <= budget:
            break
        for r in ffn[layer]:
            groups[r.name] = 0
        notes.append(f"the floors do not fit the budget: FFN of layer {layer} dropped")
    if spent() > budget:
        notes.append(f"attention floors alone keep {spent() - budget:.0f} weights more than the budget")
    mha = [r for r in refs if r.kind in MHA_KINDS]
    for r in mha + [r for layer in order for r in ffn[layer]]:
        if groups[r.name] == 0 or rule[r.name] == 0:
            continue
        for g in sorted(d for d in common_divisors(*r.shape) if rule[r.name] <= d < groups[r.name]):
            if spent() - _kept(r, groups[r.name]) + _kept(r, g) <= budget:
                groups[r.name] = g
                break
    taken = [l for l in order if all(groups[r.name] for r in ffn[l])]
    return groups, order, taken, notes


def choose_groups(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor], target: float,
                  gmax: int = 6, tau: float | str = "auto", allocation: str = "paper",
                  drop: frozenset[str] = frozenset(), ties: Ties = Ties()) -> tuple[dict[str, int], dict]:
    """Algorithm 1: G for every matrix (0 = dropped), plus notes on how it went.

    tau="auto" starts at the quantile that keeps exactly the budget's count. At high targets
    that quantile makes the adaptive rule drop whole matrices (r > G_max) and the budget is
    left unspent, so the achieved ratio overshoots; then the kept count behind the quantile
    is bisected until Algorithm 1 lands within TOLERANCE of the target (the paper tunes tau
    by hand per setting instead). An absolute tau is used as given. The matrices named in
    `drop` are dropped whatever their scores say (a sub-layer chosen to go whole), and the
    budget they free goes to the others. `ties` applies `tie_groups` inside each attempt, so
    the bisection lands the tied plan on the target.
    """
    total = sum(r.shape[0] * r.shape[1] for r in refs)
    budget = (1.0 - target) * total

    def attempt(tau_value):
        rule = {r.name: 0 if r.name in drop else group_count(scores[r.name], tau_value, gmax) for r in refs}
        allocate = _algorithm1 if allocation == "paper" else _floor_allocation
        groups, order, taken, notes = allocate(refs, scores, budget, gmax, rule, drop)
        if ties.qkv or ties.ffn:
            groups = tie_groups(refs, groups, gmax, ties)
        achieved = 1.0 - sum(_kept(r, groups[r.name]) for r in refs) / total
        return achieved, (tau_value, groups, order, taken, notes)

    if tau == "auto":
        lo, hi = 1, total  # kept count behind the quantile: fewer -> higher tau
        count = max(1, round(budget))
        achieved, result = attempt(auto_tau(scores, count))
        for _ in range(40):
            if abs(achieved - target) <= TOLERANCE:
                break
            if achieved > target:
                lo = count + 1
            else:
                hi = count - 1
            if lo > hi:
                break
            count = (lo + hi) // 2
            achieved, result = attempt(auto_tau(scores, count))
    else:
        achieved, result = attempt(float(tau))
    tau_value, groups, order, taken, notes = result
    if abs(achieved - target) > TOLERANCE:
        notes.append(f"achieved ratio {achieved:.4f} is more than {TOLERANCE:.0%} from target {target}")
    info = {"tau": tau_value, "tau_mode": "auto" if tau == "auto" else "absolute", "allocation": allocation,
            "ffn_order": order, "ffn_layers_kept": sorted(taken),
            "ffn_layers_dropped": sorted(set(order) - set(taken)), "notes": notes}
    return groups, info


def plan_pgb(refs: Sequence[MatrixRef], scores: Mapping[str, torch.Tensor], target: float,
             gmax: int = 6, nperm: int = 6, tau: float | str = "auto", permute: bool = True,
             progress: bool = False, allocation: str = "paper", drop: frozenset[str] = frozenset(),
             ties: Ties = Ties()) -> Plan:
    """Algorithm 1 (or the floor allocation) + Algorithm 2 for the whole model: the PGB
    plan at `target`, with the matrices in `drop` dropped (and permutations tied by `ties`)."""
    groups, info = choose_groups(refs, scores, target, gmax, tau, allocation, drop, ties)
    meta = {"method": "pgb" if permute else "no-permutation", "target": target, "gmax": gmax,
            "nperm": nperm, **ties.meta(), **info}
    return grouped_plan(refs, scores, groups, nperm, permute, meta, progress, ties)

"""Steps 2 and 3: number of groups per matrix, and the permutation search (Algorithm 2).

The permutation search is the alternating-sort heuristic of Zhao & Luk (2019) as pinned
down in PGB.md section 3. Sorting is stable, so ties keep their current order and the
result is deterministic.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def common_divisors(m: int, n: int) -> list[int]:
    g = math.gcd(m, n)
    return [d for d in range(1, g + 1) if g % d == 0]


def group_count(scores: torch.Tensor, tau: float, gmax: int) -> int:
    """G for one matrix: 0 (drop) when n_tau = 0 or M*N/n_tau > G_max, else the largest
    common divisor of M and N not above min(G_max, M*N/n_tau)."""
    m, n = scores.shape
    n_tau = int((scores > tau).sum())
    if n_tau == 0:
        return 0
    r = m * n / n_tau
    if r > gmax:
        return 0
    return max(d for d in common_divisors(m, n) if d <= min(gmax, r))


def _desc(x: torch.Tensor) -> torch.Tensor:
    return torch.sort(x, descending=True, stable=True).indices


def permute_and_group(scores: torch.Tensor, groups: int, nperm: int = 6,
                      permute: bool = True) -> tuple[list[int], list[int], float]:
    """Row and column permutations that gather importance into G diagonal blocks.

    Returns (pr, pc, captured): rows and columns in the order the groups took them, and
    the fraction of the matrix's importance inside the blocks. permute=False keeps the
    identity order (the "grouping without permutation" ablation).
    """
    pr, (pc,), (captured,) = permute_and_group_shared([scores], groups, nperm, permute)
    return pr, pc, captured


def permute_and_group_shared(scores: Sequence[torch.Tensor], groups: int, nperm: int = 6,
                             permute: bool = True) -> tuple[list[int], list[list[int]], list[float]]:
    """Algorithm 2 for matrices that read the same input (W_Q, W_K, W_V of a layer): one row
    permutation for all of them, so an export permutes their input once, and a column
    permutation each. Each member's columns sort by its own importance over the group's
    rows; the rows sort by the importance summed over every member's group columns. With one
    matrix this is Algorithm 2 as PGB.md section 3 states it.

    Returns (pr, [pc per matrix], [captured per matrix]).
    """
    m = scores[0].shape[0]
    if any(s.shape[0] != m for s in scores):
        raise ValueError(f"matrices sharing rows must have the same input size, got {[tuple(s.shape) for s in scores]}")
    s = [x.double() for x in scores]
    if groups == 0:
        return list(range(m)), [list(range(x.shape[1])) for x in s], [0.0] * len(s)
    for x in s:
        if m % groups or x.shape[1] % groups:
            raise ValueError(f"G={groups} does not divide the {m}x{x.shape[1]} matrix")
    br, bcs = m // groups, [x.shape[1] // groups for x in s]
    rows, cols = torch.arange(m), [torch.arange(x.shape[1]) for x in s]  # R: unassigned, in current order
    pr, pcs = [], [[] for _ in s]
    for _ in range(groups):
        for _ in range(nperm if permute and len(rows) > br else 0):
            cols = [c[_desc(x[rows[:br]][:, c].sum(0))] for x, c in zip(s, cols)]
            rows = rows[_desc(sum(x[rows][:, c[:bc]].sum(1) for x, c, bc in zip(s, cols, bcs)))]
        pr += rows[:br].tolist()
        for pc, c, bc in zip(pcs, cols, bcs):
            pc += c[:bc].tolist()
        rows, cols = rows[br:], [c[bc:] for c, bc in zip(cols, bcs)]
    captured = []
    for x, pc, bc in zip(s, pcs, bcs):
        total = float(x.sum())
        inside = sum(float(x[pr[i * br:(i + 1) * br]][:, pc[i * bc:(i + 1) * bc]].sum()) for i in range(groups))
        captured.append(inside / total if total > 0 else 0.0)
    return pr, pcs, captured


def capture_baselines(scores: torch.Tensor, groups: int) -> dict[str, float]:
    """What other choices would capture at the same kept count (PGB.md section 10): identity
    blocks (grouping without permutation) and the unstructured top-k, an upper bound."""
    if groups == 0:
        return {"identity": 0.0, "topk": 0.0}
    _, _, identity = permute_and_group(scores, groups, nperm=0, permute=False)
    s = scores.double().flatten()
    total = float(s.sum())
    topk = float(torch.topk(s, s.numel() // groups).values.sum()) / total if total > 0 else 0.0
    return {"identity": identity, "topk": topk}

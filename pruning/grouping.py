"""Steps 2 and 3: number of groups per matrix, and the permutation search (Algorithm 2).

The permutation search is the alternating-sort heuristic of Zhao & Luk (2019) as pinned
down in PGB.md section 3. Sorting is stable, so ties keep their current order and the
result is deterministic.
"""
from __future__ import annotations

import math

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
    m, n = scores.shape
    s = scores.double()
    total = float(s.sum())
    if groups == 0:
        return list(range(m)), list(range(n)), 0.0
    if m % groups or n % groups:
        raise ValueError(f"G={groups} does not divide the {m}x{n} matrix")
    br, bc = m // groups, n // groups
    rows, cols = torch.arange(m), torch.arange(n)  # R: unassigned, in current order
    pr, pc = [], []
    for _ in range(groups):
        for _ in range(nperm if permute and len(rows) > br else 0):
            cols = cols[_desc(s[rows[:br]][:, cols].sum(0))]
            rows = rows[_desc(s[rows][:, cols[:bc]].sum(1))]
        pr += rows[:br].tolist()
        pc += cols[:bc].tolist()
        rows, cols = rows[br:], cols[bc:]
    inside = sum(float(s[pr[i * br:(i + 1) * br]][:, pc[i * bc:(i + 1) * bc]].sum())
                 for i in range(groups))
    return pr, pc, inside / total if total > 0 else 0.0


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

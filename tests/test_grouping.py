import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from pruning.grouping import common_divisors, group_count, permute_and_group
from pruning.plan import MatrixPlan


def test_paper_4x4_example():
    s = torch.tensor([[1, 0, 0, 2], [0, 1, 1, 0], [2, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.float)
    pr, pc, captured = permute_and_group(s, groups=2, nperm=6)
    # paper: pi_r = [1,3,2,4], pi_c = [1,4,2,3] (1-based); order inside a group is free
    assert [set(pr[:2]), set(pr[2:])] == [{0, 2}, {1, 3}]
    assert [set(pc[:2]), set(pc[2:])] == [{0, 3}, {1, 2}]
    blocks = [float(s[pr[i * 2:i * 2 + 2]][:, pc[i * 2:i * 2 + 2]].sum()) for i in range(2)]
    assert blocks == [6.0, 4.0]
    # The matrix sums to 10 (PGB.md says 12): every bit of importance is captured.
    assert captured == 1.0


def test_group_count_rule():
    s = torch.zeros(12, 24)
    assert group_count(s, tau=0.5, gmax=6) == 0  # n_tau = 0: drop
    s.view(-1)[:288 // 5] = 1.0  # r = 288/57 = 5.05 -> largest divisor of 12, 24 below it: 4
    assert group_count(s, 0.5, 6) == 4
    s.zero_()
    s.view(-1)[:40] = 1.0  # r = 7.2 > gmax: drop
    assert group_count(s, 0.5, 6) == 0
    s.fill_(1.0)  # every weight important: dense
    assert group_count(s, 0.5, 6) == 1
    assert common_divisors(384, 1536) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 384]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(6, 12), (12, 12), (24, 8), (30, 60)]), st.sampled_from([1, 2, 3, 6]),
       st.integers(0, 3), st.integers(0, 10_000))
def test_search_yields_permutations_and_honest_capture(shape, g, nperm, seed):
    m, n = shape
    assume(m % g == 0 and n % g == 0)
    s = torch.rand(m, n, generator=torch.Generator().manual_seed(seed))
    pr, pc, captured = permute_and_group(s, g, nperm)
    assert sorted(pr) == list(range(m)) and sorted(pc) == list(range(n))
    mask = MatrixPlan("w", 0, "query", shape, g, pr, pc).mask()
    assert abs(captured - float(s[mask].double().sum() / s.double().sum())) < 1e-9
    assert int(mask.sum()) == m * n // g


def test_permutation_beats_identity_on_planted_blocks():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(24, 48, generator=g) * 0.01
    rows, cols = torch.randperm(24, generator=g), torch.randperm(48, generator=g)
    for i in range(3):  # three hidden important blocks under a random shuffle
        s[rows[i * 8:(i + 1) * 8, None], cols[i * 16:(i + 1) * 16]] += 1.0
    _, _, found = permute_and_group(s, 3, nperm=6)
    _, _, identity = permute_and_group(s, 3, nperm=6, permute=False)
    assert found > 0.97 and identity < 0.5


def test_g_must_divide_both_sides():
    with pytest.raises(ValueError, match="does not divide"):
        permute_and_group(torch.rand(24, 8), 6)


def test_capture_baselines_bracket_the_search():
    from pruning.grouping import capture_baselines
    g = torch.Generator().manual_seed(1)
    s = torch.rand(24, 48, generator=g).pow(3)
    _, _, found = permute_and_group(s, 3, nperm=6)
    base = capture_baselines(s, 3)
    assert base["identity"] < found <= base["topk"] <= 1.0
    assert capture_baselines(s, 0) == {"identity": 0.0, "topk": 0.0}


def test_shared_search_finds_blocks_planted_under_one_row_shuffle():
    """Three matrices reading one input, blocks planted under a common row shuffle and a
    column shuffle each: the joint search gives them one row permutation and finds every
    member's blocks."""
    from pruning.grouping import permute_and_group_shared
    g = torch.Generator().manual_seed(2)
    rows = torch.randperm(24, generator=g)
    members = []
    for _ in range(3):
        s = torch.rand(24, 36, generator=g) * 0.01
        cols = torch.randperm(36, generator=g)
        for i in range(3):
            s[rows[i * 8:(i + 1) * 8, None], cols[i * 12:(i + 1) * 12]] += torch.rand(1, generator=g) + 0.5
        members.append(s)
    pr, pcs, captured = permute_and_group_shared(members, 3, nperm=6)
    assert sorted(pr) == list(range(24)) and all(sorted(pc) == list(range(36)) for pc in pcs)
    for s, pc, cap in zip(members, pcs, captured):
        mask = MatrixPlan("w", 0, "query", (24, 36), 3, pr, pc).mask()
        assert cap > 0.97 and abs(cap - float(s[mask].double().sum() / s.double().sum())) < 1e-9
    with pytest.raises(ValueError, match="same input size"):
        permute_and_group_shared([torch.rand(24, 36), torch.rand(12, 36)], 3)

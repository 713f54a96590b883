import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from pruning.grouped import GroupedLinear
from tests.test_plan import random_plan


def masked_and_grouped(m, n, g, seed, integer):
    mp = random_plan(m, n, g, seed)
    gen = torch.Generator().manual_seed(seed + 7)
    dense = nn.Linear(m, n)
    with torch.no_grad():
        w = torch.randint(-4, 5, (n, m), generator=gen).float() if integer else torch.randn(n, m, generator=gen)
        dense.weight.copy_(w * mp.mask().T)
        dense.bias.copy_(torch.randint(-4, 5, (n,), generator=gen).float())
    x = (torch.randint(-4, 5, (3, 5, m), generator=gen).float() if integer
         else torch.randn(3, 5, m, generator=gen))
    return dense, GroupedLinear(dense, mp), x


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(4, 8), (12, 12), (24, 36), (36, 24)]), st.sampled_from([0, 1, 2, 3, 4, 6, 12]),
       st.integers(0, 10_000))
def test_grouped_equals_masked_dense_exactly(shape, g, seed):
    # Small integers keep every product and partial sum exact in fp32, so any order of
    # summation gives the same bits: equality, not closeness.
    if g and (shape[0] % g or shape[1] % g):
        g = 1
    dense, grouped, x = masked_and_grouped(*shape, g, seed, integer=True)
    assert torch.equal(grouped(x), dense(x))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([2, 3, 6]), st.integers(0, 10_000))
def test_grouped_matches_masked_dense_on_real_values(g, seed):
    dense, grouped, x = masked_and_grouped(384, 1536, g, seed, integer=False)
    # fp32 sums of up to 384 products of size ~1 in another order: |error| ~ sqrt(384) * 2^-24 * |y|
    torch.testing.assert_close(grouped(x), dense(x), rtol=1e-5, atol=1e-4)


def test_grouped_stores_only_the_blocks():
    _, grouped, _ = masked_and_grouped(384, 1536, 3, 0, integer=False)
    assert grouped.blocks.numel() == 384 * 1536 // 3

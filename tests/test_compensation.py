import torch

from pruning import bert, budget, compensation, repermute
from pruning.compensation import masked_ridge, reconstruction_error
from tests.conftest import random_batches, tiny_bert
from tests.test_budget import fake_scores
from tests.test_plan import random_plan


def test_block_ridge_zero_outside_and_better_than_masking():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 24, generator=g) @ torch.randn(24, 24, generator=g)  # correlated inputs
    w = torch.randn(24, 36, generator=g)
    mp = random_plan(24, 36, 3, 0)
    mask = mp.mask()
    h = x.T.double() @ x.double()
    new = masked_ridge(h, w, mask, damp=1e-6)
    assert not new[~mask].any()
    before = reconstruction_error(h, w, w * mask)
    after = reconstruction_error(h, w, new)
    assert after < 0.8 * before
    # the solution is the least-squares optimum on every block: gradient ~ 0 there
    grad = (h @ (new.double() - w.double()))
    assert float(grad[mask].abs().max()) < 1e-3 * float(h.diagonal().max())


def test_full_mask_gives_back_w():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 12, generator=g)
    w = torch.randn(12, 8, generator=g)
    new = masked_ridge(x.T @ x, w, torch.ones(12, 8, dtype=torch.bool), damp=1e-9)
    torch.testing.assert_close(new, w, atol=1e-5, rtol=1e-5)


def test_compensate_prunes_to_the_plan_and_lowers_error():
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    refs = bert.matrices(model)
    plan = budget.plan_pgb(refs, fake_scores(refs), 0.5, nperm=2)
    biases = {r.name: bert.linear(model, r).bias.detach().clone() for r in refs}
    report = compensation.compensate(model, plan.masks(), random_batches(4, 8, 16), progress=False)
    assert repermute.violations(model, plan) == []
    assert report and all(v["after"] <= v["before"] + 1e-9 for v in report.values())
    for r in refs:
        assert torch.equal(bert.linear(model, r).bias, biases[r.name])

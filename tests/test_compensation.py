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


def _hidden(model, batches):
    """The encoder's last hidden states on the real tokens of `batches`."""
    with torch.no_grad():
        return torch.cat([model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                     token_type_ids=b["token_type_ids"]).last_hidden_state[b["attention_mask"].bool()]
                          for b in batches])


def test_ridge_towards_a_reference_is_the_blockwise_least_squares_fit():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(400, 24, generator=g, dtype=torch.float64)
    x = y + 0.3 * torch.randn(400, 24, generator=g, dtype=torch.float64)  # the pruned stream: Y perturbed
    w = torch.randn(24, 36, generator=g)
    mask = random_plan(24, 36, 3, 0).mask()
    new = masked_ridge(x.T @ x, w, mask, damp=1e-12, cross=x.T @ y)
    assert not new[~mask].any()
    target = y @ w.double()
    for c in range(36):  # every output column against lstsq on its kept rows
        rows = mask[:, c].nonzero().squeeze(1)
        best = torch.linalg.lstsq(x[:, rows], target[:, c:c + 1]).solution.squeeze(1)
        torch.testing.assert_close(new[rows, c].double(), best, atol=1e-4, rtol=1e-4)


def test_dense_reference_with_the_same_input_gives_back_w_whatever_the_damping():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(100, 12, generator=g)
    w = torch.randn(12, 8, generator=g)
    h = x.T @ x
    new = masked_ridge(h, w, torch.ones(12, 8, dtype=torch.bool), damp=0.5, cross=h)
    torch.testing.assert_close(new, w, atol=1e-5, rtol=1e-5)
    shrunk = masked_ridge(h, w, torch.ones(12, 8, dtype=torch.bool), damp=0.5)  # the spec's ridge does shrink
    assert float((shrunk - w).abs().max()) > 1e-2


def test_reconstruction_error_against_a_reference_matches_its_definition():
    g = torch.Generator().manual_seed(4)
    y = torch.randn(300, 10, generator=g, dtype=torch.float64)
    x = y + 0.5 * torch.randn(300, 10, generator=g, dtype=torch.float64)
    w, w_new = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    direct = float((x @ w_new.double() - y @ w.double()).square().sum() / (y @ w.double()).square().sum())
    got = reconstruction_error(x.T @ x, w, w_new, cross=x.T @ y, target_norm=float((y @ w.double()).square().sum()))
    assert abs(got - direct) < 1e-9 * max(1.0, direct)


def test_dense_mode_follows_the_dense_model_closer_than_the_spec_form():
    dense = tiny_bert(hidden=48, layers=3, heads=4, ffn=192)
    refs = bert.matrices(dense)
    plan = budget.plan_pgb(refs, fake_scores(refs), 0.6, nperm=2)
    batches = random_batches(6, 8, 16)
    want = _hidden(dense, batches)
    errors = {}
    for mode in compensation.MODES:
        model = tiny_bert(hidden=48, layers=3, heads=4, ffn=192)
        report = compensation.compensate(model, plan.masks(), batches, progress=False, mode=mode)
        assert repermute.violations(model, plan) == []
        assert (report == {}) == (mode == "off")
        errors[mode] = float((_hidden(model, batches) - want).square().sum())
    assert errors["dense"] < errors["pruned"] < errors["off"]


def test_dense_mode_leaves_an_unpruned_first_layer_as_it_was():
    model = tiny_bert(hidden=48, layers=2, heads=4, ffn=192)
    refs = bert.matrices(model)
    masks = budget.plan_pgb(refs, fake_scores(refs), 0.5, nperm=2).masks()
    masks.update({r.name: torch.ones_like(masks[r.name]) for r in refs if r.layer == 0})
    before = {r.name: bert.weight(model, r).clone() for r in refs}
    report = compensation.compensate(model, masks, random_batches(4, 8, 16), progress=False, mode="dense")
    first = [r for r in refs if r.layer == 0]
    assert all(r.name in report for r in refs if masks[r.name].any())  # unpruned ones are refitted too
    for r in first:
        torch.testing.assert_close(bert.weight(model, r), before[r.name], atol=1e-5, rtol=1e-5)
    assert any(not torch.allclose(bert.weight(model, r), before[r.name] * masks[r.name]) for r in refs if r.layer == 1)

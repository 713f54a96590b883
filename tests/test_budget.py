import pytest
import torch

from pruning import ablations, bert, budget, cost, grouping, repermute
from tests.conftest import tiny_bert


def fake_scores(refs, seed=0):
    """Heavy-tailed random saliency with a per-layer scale, like real Fisher scores."""
    g = torch.Generator().manual_seed(seed)
    return {r.name: torch.rand(r.shape, generator=g).pow(4) * (1 + r.layer) for r in refs}


@pytest.mark.parametrize("target", [0.3, 0.4, 0.5, 0.6, 0.75, 0.88])
def test_budget_lands_within_one_point(target):
    refs = bert.matrices(tiny_bert())
    plan = budget.plan_pgb(refs, fake_scores(refs), target, gmax=6, nperm=2)
    assert abs(plan.ratio - target) <= 0.01, plan.meta["notes"]
    assert not plan.meta["notes"]
    for mp in plan.matrices:
        mp.validate()
        assert mp.groups <= 6


def test_ffn_layers_taken_in_importance_order_and_the_rest_dropped():
    refs = bert.matrices(tiny_bert())
    plan = budget.plan_pgb(refs, fake_scores(refs), 0.75, nperm=1)
    assert plan.meta["ffn_order"] == [3, 2, 1, 0]  # scores scale with the layer index
    dropped = plan.meta["ffn_layers_dropped"]
    assert dropped and all(l not in dropped for l in plan.meta["ffn_layers_kept"])
    for mp in plan.matrices:
        if mp.kind in bert.FFN_KINDS and mp.layer in dropped:
            assert mp.groups == 0


def test_dropped_matrices_keep_their_biases():
    model = tiny_bert()
    refs = bert.matrices(model)
    plan = budget.plan_pgb(refs, fake_scores(refs), 0.88, nperm=1)
    biases = {r.name: bert.linear(model, r).bias.detach().clone() for r in refs}
    repermute.apply_plan(model, plan)
    dropped = [mp for mp in plan.matrices if mp.groups == 0]
    assert dropped
    for mp in dropped:
        lin = bert.linear(model, next(r for r in refs if r.name == mp.name))
        assert not lin.weight.any()
        assert torch.equal(lin.bias, biases[mp.name]) and lin.bias.any()
    assert repermute.violations(model, plan) == []


def test_absolute_tau_and_mha_overrun_are_reported():
    refs = bert.matrices(tiny_bert())
    plan = budget.plan_pgb(refs, fake_scores(refs), 0.9, tau=0.0, nperm=1)  # everything "important"
    assert plan.meta["tau_mode"] == "absolute"
    assert any("MHA phase alone" in n for n in plan.meta["notes"])


@pytest.mark.parametrize("target, g", [(0.5, 2), (0.6, 3), (0.4, 2)])
def test_fixed_g_is_the_smallest_g_meeting_the_target(target, g):
    refs = bert.matrices(tiny_bert())
    plan = ablations.fixed_g(refs, fake_scores(refs), target, nperm=1)
    assert {mp.groups for mp in plan.matrices} == {g}


def test_mask_ablations_keep_the_pgb_counts():
    model = tiny_bert()
    refs = bert.matrices(model)
    scores = fake_scores(refs)
    plan = budget.plan_pgb(refs, scores, 0.5, nperm=1)
    kept = {mp.name: mp.kept for mp in plan.matrices}
    unstructured = ablations.unstructured(refs, scores, kept)
    assert {n: int(m.sum()) for n, m in unstructured.items()} == kept
    structured = ablations.structured(refs, scores, kept, heads=4)
    assert abs(cost.kept_params(structured) - plan.kept) / plan.total < 0.03
    q = next(r for r in refs if r.kind == "query" and r.layer == 0)
    cols = structured[q.name].any(0).view(4, 24)
    assert torch.equal(cols.all(1), cols.any(1))  # whole heads or nothing


def test_no_permutation_keeps_identity_order():
    refs = bert.matrices(tiny_bert())
    plan = budget.plan_pgb(refs, fake_scores(refs), 0.5, nperm=3, permute=False)
    for mp in plan.matrices:
        assert mp.row_perm == list(range(mp.shape[0])) and mp.col_perm == list(range(mp.shape[1]))


def test_flops_ratio_counts_kept_weights_and_vanishing_attention():
    refs = bert.matrices(tiny_bert(layers=1, heads=4))
    dense = {r.name: torch.ones(r.shape, dtype=torch.bool) for r in refs}
    assert cost.flops_ratio(refs, dense, 4, 128) == 1.0
    half = {n: torch.rand(m.shape) < 2 for n, m in dense.items()}
    for n in half:
        half[n].view(-1)[::2] = False
    linear = 128 * sum(m.numel() for m in dense.values())
    attention = 2 * 128 * 128 * 96
    assert cost.flops_ratio(refs, half, 4, 128) == pytest.approx((linear / 2 + attention) / (linear + attention))
    no_value = dict(dense, **{refs[2].name: torch.zeros(refs[2].shape, dtype=torch.bool)})
    # W_V dropped: the attention is a constant, so Q, K and O are dead too
    assert cost.macs(refs, no_value, 4, 128) == 128 * (sum(m.numel() for m in dense.values()) - 4 * 96 * 96)


def test_a_head_without_output_rows_costs_no_attention():
    refs = bert.matrices(tiny_bert(layers=1, heads=4))
    dense = {r.name: torch.ones(r.shape, dtype=torch.bool) for r in refs}
    one_head_out = dict(dense)
    one_head_out[refs[3].name] = dense[refs[3].name].clone()
    one_head_out[refs[3].name][24:48] = False  # head 1 of 4 (24 features each): its W_O rows
    scores = 2 * 128 * 128 * 24
    assert cost.macs(refs, dense, 4, 128) - cost.macs(refs, one_head_out, 4, 128) == 128 * 24 * 96 + scores
    # one row left keeps the head computed
    one_head_out[refs[3].name][30] = True
    assert cost.macs(refs, dense, 4, 128) - cost.macs(refs, one_head_out, 4, 128) == 128 * 23 * 96


def test_auto_tau_moves_off_the_quantile_when_the_rule_drops_too_much():
    refs = bert.matrices(tiny_bert())
    g = torch.Generator().manual_seed(3)
    # very concentrated saliency: at the plain quantile most matrices have r > G_max and drop
    scores = {r.name: torch.rand(r.shape, generator=g).pow(30) for r in refs}
    total = sum(r.shape[0] * r.shape[1] for r in refs)
    quantile = budget.auto_tau(scores, round(0.12 * total))
    first = {r.name: budget.group_count(scores[r.name], quantile, 6) for r in refs}
    assert sum(v == 0 for v in first.values()) > len(refs) // 2
    plan = budget.plan_pgb(refs, scores, 0.88, nperm=1)
    assert abs(plan.ratio - 0.88) <= 0.01, plan.meta["notes"]
    assert plan.meta["tau"] < quantile


@pytest.mark.parametrize("target", [0.6, 0.75, 0.88])
def test_budget_counts_live_weights_only(target):
    """A matrix the rule drops takes its dead partners with it (W_V or W_O: the layer's four
    attention matrices; W_1 or W_2: both), so the plan's kept weights are all live: what the
    exporter stores is the budget, and the ratio lands on the target."""
    refs = bert.matrices(tiny_bert())
    g = torch.Generator().manual_seed(5)
    # concentrated saliency, value matrices of layers 0-1 nearly worthless: the rule drops them
    scores = {r.name: torch.rand(r.shape, generator=g).pow(20) * (1e-6 if r.kind == "value" and r.layer < 2 else 1)
              for r in refs}
    plan = budget.plan_pgb(refs, scores, target, nperm=1)
    masks = plan.masks()
    assert cost.kept_params(cost.live(refs, masks)) == cost.kept_params(masks) == plan.kept
    assert abs(plan.ratio - target) <= 0.01, plan.meta["notes"]
    by = {(mp.layer, mp.kind): mp.groups for mp in plan.matrices}
    for layer in range(4):
        if by[(layer, "value")] == 0 or by[(layer, "attn_out")] == 0:
            assert all(by[(layer, k)] == 0 for k in bert.MHA_KINDS)
        if by[(layer, "ffn1")] == 0 or by[(layer, "ffn2")] == 0:
            assert by[(layer, "ffn1")] == by[(layer, "ffn2")] == 0


@pytest.mark.parametrize("target", [0.5, 0.75, 0.88])
def test_floor_allocation_drops_nothing_while_the_floors_fit(target):
    """--allocation floor: every matrix keeps at least G_max's share when that fits the budget
    (at 0.88 on this model it does not: the least important FFN layers go first, and say so);
    the ratio still lands on the target, and never more weights than the budget."""
    refs = bert.matrices(tiny_bert())
    scores = fake_scores(refs)
    plan = budget.plan_pgb(refs, scores, target, gmax=6, nperm=1, allocation="floor")
    assert plan.meta["allocation"] == "floor"
    assert abs(plan.ratio - target) <= 0.01, plan.meta["notes"]
    total = sum(r.shape[0] * r.shape[1] for r in refs)
    assert plan.kept <= (1 - target) * total + 1
    floors = sum(r.shape[0] * r.shape[1] // 6 for r in refs)  # 6 divides every shape here
    dropped = [mp for mp in plan.matrices if mp.groups == 0]
    if floors <= (1 - target) * total:
        assert not dropped
    else:
        assert dropped and all(mp.kind in bert.FFN_KINDS for mp in dropped)
        assert any("floors do not fit" in n for n in plan.meta["notes"])
    assert all(mp.groups <= 6 for mp in plan.matrices)
    paper = budget.plan_pgb(refs, scores, target, gmax=6, nperm=1)
    assert sum(mp.groups == 0 for mp in paper.matrices) >= len(dropped)


def test_auto_tau_covers_keeping_everything_and_nothing():
    scores = {"a": torch.tensor([[0.0, 1.0], [2.0, 3.0]]), "b": torch.tensor([[0.5]])}
    assert sum(int((s > budget.auto_tau(scores, 5)).sum()) for s in scores.values()) == 5
    assert sum(int((s > budget.auto_tau(scores, 99)).sum()) for s in scores.values()) == 5
    assert sum(int((s > budget.auto_tau(scores, 2)).sum()) for s in scores.values()) == 2
    assert sum(int((s > budget.auto_tau(scores, 0)).sum()) for s in scores.values()) == 0


@pytest.mark.parametrize("allocation", ["paper", "floor"])
@pytest.mark.parametrize("target", [0.5, 0.75])
def test_tied_qkv_share_g_and_input_order(allocation, target):
    """--tie-qkv: in every layer the grouped W_Q, W_K, W_V have one G and one row
    permutation, the plan still lands on the target, and each is block-diagonal under it.
    Untied, the same scores give them their own orders."""
    refs = bert.matrices(tiny_bert())
    scores = fake_scores(refs)
    tied = budget.plan_pgb(refs, scores, target, nperm=2, allocation=allocation, ties=budget.Ties(qkv=True))
    free = budget.plan_pgb(refs, scores, target, nperm=2, allocation=allocation)
    assert abs(tied.ratio - target) <= budget.TOLERANCE and tied.meta["tie_qkv"] is True

    def qkv(plan):
        by_layer = {}
        for mp in plan.matrices:
            if mp.kind in budget.QKV and mp.groups >= 2:
                by_layer.setdefault(mp.layer, []).append(mp)
        return by_layer
    shared = [ms for ms in qkv(tied).values() if len(ms) > 1]
    assert shared, "no layer with two grouped Q/K/V to tie"
    for ms in shared:
        assert len({m.groups for m in ms}) == 1 and all(m.row_perm == ms[0].row_perm for m in ms)
    for mp in tied.matrices:
        mp.validate()
    assert any(len({tuple(m.row_perm) for m in ms}) > 1 for ms in qkv(free).values() if len(ms) > 1)


@pytest.mark.parametrize("allocation", ["paper", "floor"])
@pytest.mark.parametrize("target", [0.5, 0.75])
def test_tied_ffn_share_one_neuron_partition(allocation, target):
    """--tie-ffn: in every layer whose W_1 and W_2 are both grouped they have one G, and W_1's
    column chunks are exactly W_2's row chunks (block i of FFN1 makes what block i of FFN2
    reads); the plan lands on the target and each matrix is block-diagonal under its orders.
    Untied, the same scores give them other chunks."""
    refs = bert.matrices(tiny_bert())
    scores = fake_scores(refs)
    tied = budget.plan_pgb(refs, scores, target, nperm=2, allocation=allocation, ties=budget.Ties(ffn=True))
    free = budget.plan_pgb(refs, scores, target, nperm=2, allocation=allocation)
    assert abs(tied.ratio - target) <= budget.TOLERANCE
    assert tied.meta["tie_ffn"] is True and tied.meta["tie_qkv"] is False

    def chunks(perm, g):
        return [set(perm[i * len(perm) // g:(i + 1) * len(perm) // g]) for i in range(g)]

    def pairs(plan):
        return [(k["ffn1"], k["ffn2"]) for k in plan.by_layer().values() if k["ffn1"].groups >= 2 and k["ffn2"].groups >= 2]
    assert pairs(tied), "no layer with a grouped FFN pair to tie"
    for f1, f2 in pairs(tied):
        assert f1.groups == f2.groups
        assert chunks(f1.col_perm, f1.groups) == chunks(f2.row_perm, f2.groups)
    for mp in tied.matrices:
        mp.validate()
        assert 0.0 <= mp.captured <= 1.0
    assert any(chunks(f1.col_perm, f1.groups) != chunks(f2.row_perm, f2.groups)
               for f1, f2 in pairs(free) if f1.groups == f2.groups)


def test_tied_ffn_search_is_algorithm_2_on_the_neurons():
    """The tied pair's search is Algorithm 2 run on W_1^T and W_2 together: with W_2's scores
    zero it is W_1's own search transposed (its rows are W_1's columns)."""
    refs = [r for r in bert.matrices(tiny_bert(layers=1)) if r.kind in ("ffn1", "ffn2")]
    f1, f2 = refs
    scores = {f1.name: torch.rand(f1.shape, generator=torch.Generator().manual_seed(1)), f2.name: torch.zeros(f2.shape)}
    plan = budget.grouped_plan(refs, scores, {f1.name: 4, f2.name: 4}, nperm=3, ties=budget.Ties(ffn=True))
    rows, (cols, _), (cap, _) = grouping.permute_and_group_shared([scores[f1.name].T, scores[f2.name]], 4, 3)
    assert plan[f1.name].col_perm == rows == plan[f2.name].row_perm
    assert plan[f1.name].row_perm == cols and plan[f1.name].captured == cap
    alone, _, own = grouping.permute_and_group(scores[f1.name].T, 4, 3)
    assert alone == rows and own == cap


def test_tie_groups_picks_the_common_g_nearest_the_kept_count():
    refs = [r for r in bert.matrices(tiny_bert(layers=1)) if r.kind in budget.QKV + ("ffn1",)]
    q, k, v, f = refs
    tied = budget.tie_groups(refs, {q.name: 2, k.name: 3, v.name: 6, f.name: 4}, gmax=6, ties=budget.Ties(qkv=True))
    assert tied == {q.name: 3, k.name: 3, v.name: 3, f.name: 4}  # 1/2 + 1/3 + 1/6 = 3 x 1/3
    tied = budget.tie_groups(refs, {q.name: 1, k.name: 0, v.name: 6, f.name: 2}, gmax=6, ties=budget.Ties(qkv=True))
    assert tied == {q.name: 1, k.name: 0, v.name: 6, f.name: 2}  # one grouped member: nothing to tie

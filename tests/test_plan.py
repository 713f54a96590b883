import json

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from pruning.plan import MatrixPlan, Plan, PlanError
from pruning.repermute import from_blocks, to_blocks


def random_plan(m, n, g, seed):
    gen = torch.Generator().manual_seed(seed)
    return MatrixPlan("enc.0.q", 0, "query", (m, n), g, torch.randperm(m, generator=gen).tolist(),
                      torch.randperm(n, generator=gen).tolist())


@settings(max_examples=50, deadline=None)
@given(st.sampled_from([(4, 4), (6, 12), (12, 6), (24, 36)]), st.sampled_from([1, 2, 3, 6]),
       st.integers(0, 10_000))
def test_repermutation_round_trip_is_exact(shape, g, seed):
    assume(shape[0] % g == 0 and shape[1] % g == 0)
    mp = random_plan(*shape, g, seed)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    w_star = w * mp.mask()
    blocks = to_blocks(w_star, mp)
    assert blocks.shape == (g, shape[0] // g, shape[1] // g)
    assert torch.equal(from_blocks(blocks, mp), w_star)
    # W[pr][:, pc] of the masked weight is block diagonal: zero off the blocks
    permuted = w_star[mp.row_perm][:, mp.col_perm]
    assert torch.equal(permuted, torch.block_diag(*blocks))


def test_dropped_matrix_mask_is_empty():
    mp = random_plan(6, 12, 0, 0)
    assert mp.kept == 0 and not mp.mask().any()


def test_pgb_json_round_trip(tmp_path):
    plan = Plan([random_plan(6, 12, 3, 1), random_plan(12, 6, 0, 2)], {"target": 0.5, "tau": 1e-3})
    plan.matrices[0].captured = 0.75
    plan.save(tmp_path / "pgb.json")
    back = Plan.load(tmp_path / "pgb.json")
    assert back == plan
    assert back.kept == 24 and back.total == 144


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(row_perm=[0, 0, 1, 2, 3, 4]), "not a permutation"),
    (lambda m: m.update(groups=5), "does not divide"),
    (lambda m: m.pop("groups"), "malformed"),
])
def test_corrupt_pgb_json_is_rejected(tmp_path, edit, message):
    data = Plan([random_plan(6, 12, 3, 1)]).to_json()
    edit(data["matrices"][0])
    (tmp_path / "pgb.json").write_text(json.dumps(data))
    with pytest.raises(PlanError, match=message):
        Plan.load(tmp_path / "pgb.json")

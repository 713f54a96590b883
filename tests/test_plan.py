import json
import re

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from pruning.plan import MatrixPlan, Plan, PlanError
from pruning.repermute import from_blocks, to_blocks


def random_plan(m, n, g, seed, name="enc.0.q"):
    gen = torch.Generator().manual_seed(seed)
    return MatrixPlan(name, 0, "query", (m, n), g, torch.randperm(m, generator=gen).tolist(),
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
    plan = Plan([random_plan(6, 12, 3, 1), random_plan(12, 6, 0, 2, "enc.0.k")], {"target": 0.5, "tau": 1e-3})
    plan.matrices[0].captured = 0.75
    plan.save(tmp_path / "pgb.json")
    back = Plan.load(tmp_path / "pgb.json")
    assert back == plan
    assert back.kept == 24 and back.total == 144


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(row_perm=[0, 0, 1, 2, 3, 4]), "not a permutation"),
    (lambda m: m.update(groups=5), "does not divide"),
    (lambda m: m.pop("groups"), "missing field(s) ['groups']"),
    (lambda m: m.update(extra=1), "unknown field(s) ['extra']"),
    (lambda m: m.update(groups="2"), "groups must be a non-negative integer"),
    (lambda m: m.update(groups=2.0), "groups must be a non-negative integer"),
    (lambda m: m.update(groups=None), "groups must be a non-negative integer"),
    (lambda m: m.update(groups=[2]), "groups must be a non-negative integer"),
    (lambda m: m.update(groups=True), "groups must be a non-negative integer"),
    (lambda m: m.update(groups=-3), "groups must be a non-negative integer"),
    (lambda m: m.update(row_perm=[float(i) for i in m["row_perm"]]), "row_perm must be a list of integers"),
    (lambda m: m.update(col_perm=None), "col_perm must be a list of integers"),
    (lambda m: m.update(shape=[6]), "shape must be two positive integers"),
    (lambda m: m.update(shape=[6, 0]), "shape must be two positive integers"),
    (lambda m: m.update(kind="attention"), "kind must be one of"),
    (lambda m: m.update(layer=-1), "layer must be a non-negative integer"),
    (lambda m: m.update(layer="0"), "layer must be a non-negative integer"),
    (lambda m: m.update(name=7), "name must be a non-empty string"),
    (lambda m: m.update(captured=float("nan")), "captured must be a finite number"),
])
def test_corrupt_pgb_json_is_rejected(tmp_path, edit, message):
    data = Plan([random_plan(6, 12, 3, 1)]).to_json()
    edit(data["matrices"][0])
    (tmp_path / "pgb.json").write_text(json.dumps(data))
    with pytest.raises(PlanError, match=re.escape(message)):
        Plan.load(tmp_path / "pgb.json")


@pytest.mark.parametrize("text, message", [
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[1, 2]", "holds a JSON list, not an object"),
    (b'{"format_version": 1, "matrices": []}', "matrices must be a non-empty list"),
    (b'{"format_version": true, "matrices": []}', "unsupported pgb.json format_version"),
    (b'{"format_version": 1, "meta": [], "matrices": [{}]}', "meta must be an object"),
    (b'{"format_version": 1, "matrices": [3]}', "matrices[0] is a JSON int, not an object"),
])
def test_unreadable_pgb_json_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "pgb.json").write_bytes(text)
    with pytest.raises(PlanError, match=re.escape(message)):
        Plan.load(tmp_path / "pgb.json")


def test_duplicate_and_foreign_matrices_are_rejected(tmp_path):
    data = Plan([random_plan(6, 12, 3, 1), random_plan(6, 12, 3, 2)]).to_json()
    (tmp_path / "pgb.json").write_text(json.dumps(data))
    with pytest.raises(PlanError, match="names enc.0.q twice"):
        Plan.load(tmp_path / "pgb.json")
    plan = Plan([random_plan(6, 12, 3, 1)])
    ref = type("Ref", (), {"name": "enc.0.q", "layer": 0, "kind": "query", "shape": (6, 12)})
    plan.check_matches([ref])
    ref.shape = (12, 6)
    with pytest.raises(PlanError, match=re.escape("shape [6, 12] where the model has layer 0, query, shape [12, 6]")):
        plan.check_matches([ref])
    ref.name = "enc.0.k"
    with pytest.raises(PlanError, match="enc.0.q is not in the model"):
        plan.check_matches([ref])

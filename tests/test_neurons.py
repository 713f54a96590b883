"""--ffn neurons: a kept FFN spends its groups' budget on whole neurons, and exports sliced."""
import contextlib
import io
import json

import torch

from pgb_export import export_cli, prune_cli
from pruning import bert, budget, neurons
from pruning.plan import Plan
from tests.conftest import tiny_bert
from tests.test_budget import fake_scores
from tests.test_reliability import assert_refused, call, world  # noqa: F401 (world is a fixture)


def test_kept_neurons_are_the_most_salient_and_hold_the_groups_budget():
    refs = bert.matrices(tiny_bert())
    scores = fake_scores(refs)
    grouped = budget.plan_pgb(refs, scores, 0.75, nperm=1)
    plan, masks = neurons.keep_neurons(grouped, refs, scores)
    assert plan.meta["ffn"] == "neurons" and "ffn" not in grouped.meta
    seen = set()
    for layer, kinds in grouped.by_layer().items():
        for kind in bert.MHA_KINDS:  # attention is the grouped plan's, untouched
            assert plan[kinds[kind].name] == kinds[kind]
            assert torch.equal(masks[kinds[kind].name], kinds[kind].mask())
        f1, f2 = kinds["ffn1"], kinds["ffn2"]
        m1, m2 = masks[f1.name], masks[f2.name]
        d, f = f1.shape
        kept = m1.any(0)
        assert torch.equal(m1, kept.expand(d, f)) and torch.equal(m2, kept[:, None].expand(f, d))  # whole neurons
        n = int(kept.sum())
        assert 2 * d * n == f1.kept + f2.kept  # G divides the FFN width here, so the count is exact
        saliency = scores[f1.name].sum(0) + scores[f2.name].sum(1)
        if 0 < n < f:
            assert saliency[kept].min() > saliency[~kept].max()
        for mp in (plan[f1.name], plan[f2.name]):
            assert mp.groups == int(n > 0)
            assert mp.row_perm == list(range(mp.shape[0])) and mp.col_perm == list(range(mp.shape[1]))
        seen.add("dropped" if n == 0 else "kept" if n < f else "dense")
    assert {"dropped", "kept"} <= seen, f"the plan must drop one FFN and keep another: {seen}"


def test_default_prune_keeps_neurons_and_the_export_leaves_the_rest_out(world, tmp_path):
    """As a user runs it: pgb-prune's default FFN is neurons, its summary shows their share,
    and pgb-export stores only the live weights (the zero neurons are sliced out)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert prune_cli.main([str(world["dense"]), "--task", "sst2", "--target", "0.6", "--out",
                               str(tmp_path / "pruned"), "--glue-dir", str(world["glue"]), "--samples", "8",
                               "--finetune-epochs", "0", "--max-len", "32", "--allocation", "floor", "--quiet"]) == 0
    plan = Plan.load(tmp_path / "pruned" / "pgb.json")
    assert plan.meta["ffn"] == "neurons"
    ffn = [mp for mp in plan.matrices if mp.kind in bert.FFN_KINDS]
    assert {mp.groups for mp in ffn} <= {0, 1}
    assert any(mp.groups >= 2 for mp in plan.matrices if mp.kind in bert.MHA_KINDS)
    pruned = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert pruned["settings"]["ffn"] == "neurons"
    share = [m for m in pruned["matrices"] if m["kind"] == "ffn1" and 0 < m["kept"] < m["size"]]
    assert share and f"{share[0]['kept'] / share[0]['size']:.0%}" in out.getvalue()
    with contextlib.redirect_stdout(io.StringIO()):
        assert export_cli.main([str(tmp_path / "pruned"), "--out", str(tmp_path / "deploy"), "--quiet"]) == 0
    params = json.loads((tmp_path / "deploy" / "report.json").read_text())["params"]
    assert params["stored"] == params["live"] == pruned["params_live"] < params["plan_blocks"]


def test_tie_ffn_needs_grouped_ffn(world, tmp_path):
    code, err = call(prune_cli, str(world["dense"]), "--task", "sst2", "--target", "0.6", "--out",
                     str(tmp_path / "pruned"), "--glue-dir", str(world["glue"]), "--tie-ffn")
    assert_refused(code, err, "pgb-prune", "add --ffn groups")
    assert not (tmp_path / "pruned").exists()

"""The measured allocation (pruning.layer_drop): sub-layer costs measured by dropping each
one, the drop count chosen by calibration loss, the model left as it came, and the chosen
sub-layers dropped in a plan that still lands on the target."""
import torch

from pruning import bert, budget, cost, importance, layer_drop
from pruning.pipeline import build_plan, held_rows
from tests.conftest import random_batches, tiny_bert


def setup(seed=0):
    model = tiny_bert(hidden=48, layers=3, heads=4, ffn=192, seed=seed)
    samples = random_batches(4, 8, 12, seed=seed)
    held = random_batches(3, 8, 12, seed=seed + 10)
    return model, bert.matrices(model), samples, held


def weights(model, refs):
    return {r.name: bert.linear(model, r).weight.detach().clone() for r in refs}


def test_drop_costs_are_measured_one_sublayer_at_a_time():
    model, refs, _, held = setup()
    before = weights(model, refs)
    costs = layer_drop.drop_costs(model, refs, held)
    assert {s.name() for s in costs} == {f"{p} {l}" for l in range(3) for p in ("attention", "ffn")}
    assert all(torch.equal(before[n], w) for n, w in weights(model, refs).items())  # restored exactly
    base = layer_drop.calibration_loss(model, held)
    attention1 = next(s for s in costs if s.name() == "attention 1")
    assert attention1.matrices == {r.name for r in refs if r.layer == 1 and r.kind in bert.MHA_KINDS}
    with torch.no_grad():
        for r in refs:
            if r.name in attention1.matrices:
                bert.linear(model, r).weight.zero_()
    assert costs[attention1] == layer_drop.calibration_loss(model, held) - base


def test_choose_keeps_the_lowest_calibration_loss_and_leaves_the_model_as_it_came():
    model, refs, samples, held = setup(1)
    scores = importance.score(model, samples, progress=False)
    before = weights(model, refs)
    drop, report = layer_drop.choose(
        model, refs, lambda d: budget.plan_pgb(refs, scores, 0.6, nperm=1, allocation="floor", drop=d),
        samples, held, max_drops=3)
    assert all(torch.equal(before[n], w) for n, w in weights(model, refs).items())
    trials = report["trials"]
    assert [t["drops"] for t in trials] == [0, 1, 2, 3]
    best = min((t for t in trials if t["calibration_loss"] is not None), key=lambda t: t["calibration_loss"])
    assert report["chosen_drops"] == best["sublayers"]
    order = [n for n in report["sublayer_costs"] if n not in report["emptied_by_budget"]]  # cheapest first
    assert all(t["sublayers"] == order[:t["drops"]] for t in trials)
    assert sorted(report["sublayer_costs"].values()) == list(report["sublayer_costs"].values())
    named = {s.name(): s.matrices for s in layer_drop.sublayers(refs)}
    assert drop == frozenset().union(*(named[n] for n in best["sublayers"]))
    measured = [t for t in trials if t["calibration_loss"] is not None]
    assert measured and all(abs(t["achieved_ratio"] - 0.6) <= budget.TOLERANCE for t in measured)


def test_choose_tries_only_sublayers_the_plan_keeps():
    """At a high target the budget empties some sub-layers on its own: dropping one of them
    would repeat the plan without drops, so the trials go on to the cheapest kept ones."""
    model, refs, samples, held = setup(1)
    scores = importance.score(model, samples, progress=False)

    def plan_for(d):
        return budget.plan_pgb(refs, scores, 0.88, nperm=1, allocation="floor", drop=d)
    empty = {mp.name for mp in plan_for(frozenset()).matrices if mp.groups == 0}
    named = {s.name(): s.matrices for s in layer_drop.sublayers(refs)}
    emptied = {n for n, m in named.items() if m <= empty}
    assert emptied and len(emptied) < len(named)
    drop, report = layer_drop.choose(model, refs, plan_for, samples, held, max_drops=2)
    assert set(report["emptied_by_budget"]) == emptied
    trials = report["trials"]
    assert [t["drops"] for t in trials] == [0, 1, 2]
    assert all(not emptied & set(t["sublayers"]) for t in trials)
    kept = [n for n in report["sublayer_costs"] if n not in emptied]
    assert [t["sublayers"] for t in trials] == [kept[:k] for k in range(3)]


def test_build_plan_drops_the_chosen_sublayers_and_lands_on_the_target():
    model, refs, samples, held = setup(2)
    scores = importance.score(model, samples, progress=False)
    plan, masks, pgb, measured = build_plan(model, refs, scores, 0.6, allocation="measured", nperm=1,
                                            samples=samples, held=held)
    assert pgb.meta["allocation"] == "measured" and pgb.meta["measured"] is measured
    named = {s.name(): s.matrices for s in layer_drop.sublayers(refs)}
    for name in measured["chosen_drops"]:
        assert all(mp.groups == 0 for mp in plan.matrices if mp.name in named[name])
    assert abs(pgb.ratio - 0.6) <= budget.TOLERANCE
    assert cost.kept_params(masks) == pgb.kept  # the FFN kept as neurons holds what its groups would


def test_held_rows_avoid_the_importance_samples():
    train = list(range(2000))
    used = train[:600]
    held = held_rows(train, used, seed=0)
    assert len(held) == 512 and not set(held) & set(used)
    assert held_rows(used, used, seed=0) == used  # nothing else to hold out: the samples themselves


def test_measured_allocation_takes_the_heads_own_loss_question_answering():
    from tests.test_question_answering import tiny_qa
    model = tiny_qa("bert")
    refs = bert.matrices(model)
    g = torch.Generator().manual_seed(0)

    def qa_batches(n, seed):
        out = []
        for i in range(n):
            ids = torch.randint(1, 120, (4, 16), generator=g)
            out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
                        "start_positions": torch.randint(0, 16, (4,), generator=g),
                        "end_positions": torch.randint(0, 16, (4,), generator=g)})
        return out
    samples, held = qa_batches(3, 0), qa_batches(2, 1)
    scores = importance.score(model, samples, progress=False)
    plan, masks, pgb, measured = build_plan(model, refs, scores, 0.5, allocation="measured", nperm=1,
                                            samples=samples, held=held)
    trials = measured["trials"]  # 2 layers: dropping 3 or 4 of the 4 sub-layers cannot keep half the weights
    assert len(trials) == layer_drop.MAX_DROPS + 1 and trials[0]["calibration_loss"] > 0
    assert [t["calibration_loss"] is None for t in trials] == [abs(t["achieved_ratio"] - 0.5) > budget.TOLERANCE
                                                               for t in trials]
    assert any(t["calibration_loss"] is None for t in trials)
    assert abs(1 - cost.kept_params(masks) / cost.total_params(masks) - 0.5) <= budget.TOLERANCE


def test_recovery_learning_rate_is_larger_for_short_recoveries_at_high_targets_or_mid_length_ones():
    from pruning.pipeline import HIGH_LR, MID_STEPS, PAPER_LR, SHORT_STEPS, recovery_lr
    assert recovery_lr(63, 0.88) == recovery_lr(SHORT_STEPS, 0.6) == HIGH_LR == 1e-4
    assert recovery_lr(MID_STEPS + 1, 0.4) == recovery_lr(345, 0.5) == recovery_lr(234, 0.5) == HIGH_LR
    assert recovery_lr(63, 0.5) == recovery_lr(MID_STEPS, 0.59) == recovery_lr(SHORT_STEPS + 1, 0.88) == PAPER_LR == 3e-5
    assert recovery_lr(SHORT_STEPS + 1, 0.4) == PAPER_LR

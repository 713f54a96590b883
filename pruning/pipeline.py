"""The pruning application as one typed function: fine-tuned model + task data -> PGB-pruned
model directory (model, pgb.json, report.json, README.md). pgb-prune parses flags into
PruneOptions and calls `prune`; benchmarks and tests call it, or its `recover` step, directly.
"""
from __future__ import annotations

import copy
import dataclasses
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import ablations, bert, budget, compensation, cost, finetune, grouping, importance, layer_drop, modeldir, neurons, repermute
from .batching import evaluate, make_batches
from .distillation import Distillation, attach_teacher, distillation
from .families import family
from .heads import HEADS, head_named
from .jsonfile import write_atomic
from .model_card import card
from .plan import Plan
from .tasks import Split, get_task, glue_dir, note_skipped
from .userdata import DataFiles, load_user_data

EMBEDDED_ROWS = 8000  # slice of the task's training set the embedded encoder is tuned on
EMBEDDED_LR = 5e-5
# budget.ALLOCATIONS, and measured: floor with the whole sub-layers pruning.layer_drop chooses
ALLOCATIONS = (*budget.ALLOCATIONS, "measured")
HELD_ROWS = 512  # training rows, disjoint from the importance samples, that rank measured plans
# Re-finetuning learning rate when none is given: the paper's 3e-5, except 1e-4 where the recovery
# is at most 500 steps and either re-learns a heavily pruned model or has a few hundred steps to
# spend. 63 steps (the CPU recipe): at 0.88 1e-4 is 4.4 points ahead of 3e-5 on minilm-sst2, at
# 0.6 0.7 ahead on minilm-sst2 and 2.2 on minilm-mrpc, at 0.4 and 0.5 neither is ahead. The
# paper's recipe on MRPC (345 steps) and RTE (234): 1e-4 is 2.7 and 2.9 ahead at 0.5
# (BENCHMARKS.md "Measured allocation, learning rate", "MRPC with 1e-4 at every target",
# "RTE at 0.5 with 1e-4").
PAPER_LR, HIGH_LR, SHORT_STEPS, HIGH_TARGET, MID_STEPS = 3e-5, 1e-4, 500, 0.6, 100
LR_RULE = (f"{HIGH_LR:g} for a recovery of at most {SHORT_STEPS} steps that is longer than {MID_STEPS} steps or "
           f"aims at a target of {HIGH_TARGET} or more, else {PAPER_LR:g}")


def recovery_lr(steps: int, target: float) -> float:
    return HIGH_LR if steps <= SHORT_STEPS and (target >= HIGH_TARGET or steps > MID_STEPS) else PAPER_LR


class DeviceUnavailable(ValueError):
    """--device names a device this machine does not have."""


def pick_device(name: str) -> torch.device:
    """`auto`: the first CUDA GPU when torch sees one, else the CPU; or a torch device name
    (cpu, cuda, cuda:1), checked to exist before minutes of work."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailable(f"--device {name!r:.40} is not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise DeviceUnavailable(f"--device {name} asks for a CUDA GPU, and torch sees "
                                f"{torch.cuda.device_count()} here")
    if device.type not in ("cpu", "cuda"):
        raise DeviceUnavailable(f"--device {name}: only cpu and cuda are supported")
    return device


@dataclass(frozen=True)
class PruneOptions:
    """What to prune and how; the CLI's flags, checked there (cli_common.number and friends)."""

    out: str
    target: float
    model_dir: str | None = None  # None: the embedded MiniLM, tuned on the task first
    task: str | None = None  # a GLUE task or squad / squad_v2, or None with data_files
    data_files: DataFiles | None = None
    tokenizer: str | None = None
    glue_dir: str | None = None
    samples: int = 2000
    gmax: int = 6
    nperm: int = 6
    tau: str = "auto"
    compensation: str = "dense"  # compensation.MODES; ahead on SST-2 at 3 targets, behind on MRPC 0.5 (BENCHMARKS.md)
    finetune_epochs: float = 3.0
    finetune_samples: int | None = None
    lr: float | None = None  # None: recovery_lr(steps, target)
    distill: float = 0.5  # weight of the dense teacher's soft loss in re-finetuning; 0 = off. Ahead or
    # level at equal steps on 7 of 8 runs with the dense compensation (BENCHMARKS.md)
    temperature: float = 2.0
    distill_hidden: float = 0.0  # weight of the layer-output loss (Distillation.hidden); 0 = off
    batch_size: int = 32
    max_len: int | None = None  # None: the task's default (128; 384 for question answering)
    ablation: str = "none"
    tie_qkv: bool = False  # budget.Ties: off, it costs accuracy for little speed (BENCHMARKS.md)
    tie_ffn: bool = False  # budget.Ties: off until it measures ahead (BENCHMARKS.md, "Tied FFN")
    ffn: str = "neurons"  # neurons.FFN_FORMS: ahead of grouped FFN at equal weights, 3 of 3 targets (BENCHMARKS.md, "FFN neurons")
    allocation: str = "measured"  # ALLOCATIONS; ahead of floor on 4 of 4, of paper on 2 of 4 (BENCHMARKS.md)
    seed: int = 0
    device: str = "auto"  # pick_device; the saved model is on the CPU whatever ran it
    force: bool = False
    progress: bool = True
    source: str | None = None  # the model as the user named it (a Hub id stays one)

    def inputs(self) -> list:
        """Every path the run reads: the output must not overlap any of them."""
        if self.data_files:
            return [self.model_dir, self.tokenizer, *self.data_files.paths()]
        task = get_task(self.task)
        model = self.model_dir or embedded_cache(task, self)
        return [model, self.tokenizer, glue_dir(self.glue_dir),
                modeldir.embedded_encoder() if not self.model_dir else None]

    @property
    def ties(self) -> budget.Ties:
        return budget.Ties(qkv=self.tie_qkv, ffn=self.tie_ffn)

    def settings(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("progress", "force")}


def embedded_cache(task, opts: PruneOptions) -> Path:
    """Where the embedded default tuned for `opts` is cached: named by everything that changes
    the tuned model (rows, length, seed, batch size, and CPU or GPU, whose floating-point
    orders differ), so another setting never gets a model tuned for this one."""
    return modeldir.cache_dir() / (f"minilm-{task.name}-{EMBEDDED_ROWS}rows-len{opts.max_len or task.max_len}"
                                   f"-seed{opts.seed}-batch{opts.batch_size}-{pick_device(opts.device).type}")


def embedded_default(task, train: list, opts: PruneOptions) -> Path:
    """The embedded MiniLM fine-tuned on a slice of the task, cached across runs."""
    target = embedded_cache(task, opts)
    if (target / "config.json").is_file():
        return target
    print(f"fine-tuning the embedded MiniLM-L6 on {EMBEDDED_ROWS} {task.name} rows -> {target}",
          file=sys.stderr)
    rows = random.Random(opts.seed).sample(train, min(EMBEDDED_ROWS, len(train)))
    tune_embedded(task, rows, target, epochs=1, lr=EMBEDDED_LR, batch_size=opts.batch_size,
                  max_len=opts.max_len or task.max_len, seed=opts.seed, progress=opts.progress,
                  device=pick_device(opts.device))
    return target


def tune_embedded(task, rows: list, out: Path, *, epochs: float, lr: float, batch_size: int,
                  max_len: int, seed: int, progress: bool, device: torch.device = torch.device("cpu"),
                  more_files: Callable[[nn.Module, object], dict[str, dict]] | None = None,
                  ) -> tuple[nn.Module, object]:
    """(model, tokenizer): the embedded MiniLM with a new `task` head, fine-tuned on `rows` (on
    `device`) and saved to `out` (replaced whole, atomically) with a report.json of the recipe
    and the JSON files `more_files(model, tokenizer)` names; the model comes back on the CPU."""
    torch.manual_seed(seed)  # the new head's initial weights: by --seed, not by what ran before
    model, tok = modeldir.load(modeldir.embedded_encoder(), num_labels=task.num_labels, new_head=task.head)
    model.to(device)
    if task.is_regression:
        model.config.problem_type = "regression"
    enc = task.encode(tok, rows, max_len, family(model).inputs, train=True)
    finetune.finetune(model, lambda e: make_batches(enc, batch_size, True, seed + e),
                      epochs, lr, seed=seed, progress=progress)
    model.to("cpu")
    model.config.finetuning_task = task.name
    with modeldir.atomic_dir(out, force=True) as tmp:
        model.save_pretrained(tmp)
        modeldir.save_tokenizer(tok, tmp)
        write_atomic(tmp / "report.json", {"model_dir": str(modeldir.embedded_encoder()), "task": task.name,
                                           "rows": len(rows), "epochs": epochs, "lr": lr,
                                           "batch_size": batch_size, "max_len": max_len, "seed": seed})
        for name, content in (more_files(model.eval(), tok) if more_files else {}).items():
            write_atomic(tmp / name, content)
    return model.eval(), tok


def recover(model, task, masks: dict, samples: list, dev_batches: list, train_enc: list, *,
            compensation_mode: str, epochs: float, lr: float, batch_size: int, seed: int,
            progress: bool, pad_id: int = 0, lap=lambda stage: None,
            distill: Distillation | None = None) -> tuple[dict, dict]:
    """Prune the dense `model` to `masks` (compensated as `compensation_mode` says), then re-finetune with the
    structure frozen, distilled from the dense model when `distill` is given; returns
    ({"vanilla": metrics, "final": metrics}, compensation report)."""
    teacher = None
    if distill and epochs > 0 and train_enc:
        train_enc = attach_teacher(model, train_enc, pad_id=pad_id)  # the dense model, before pruning
        if distill.hidden:
            teacher = copy.deepcopy(model).eval().requires_grad_(False)
        lap("teacher")
    comp = compensation.compensate(model, masks, samples, progress=progress, mode=compensation_mode)
    lap("compensation")
    metrics = {"vanilla": evaluate(model, task, dev_batches, progress)}
    lap("vanilla_eval")
    metrics["final"] = metrics["vanilla"]
    if epochs > 0 and train_enc:
        finetune.finetune(model, lambda e: make_batches(train_enc, batch_size, True, seed + 1 + e, pad_id),
                          epochs, lr, masks, seed=seed, progress=progress, distill=distill, teacher=teacher)
        lap("finetune")
        metrics["final"] = evaluate(model, task, dev_batches, progress)
        lap("final_eval")
    return metrics, comp


def build_plan(model, refs: list, scores: dict, target: float, *, allocation: str, ablation: str = "none",
               gmax: int = 6, nperm: int = 6, tau: float | str = "auto", samples: list | None = None,
               held: list | None = None, progress: bool = False, ties: budget.Ties = budget.Ties(),
               compensation_mode: str = "dense", ffn: str = PruneOptions.ffn) -> tuple:
    """(plan for pgb.json, masks, the PGB plan, measured report or None): ablations.build
    under `allocation`; `measured` first chooses whole sub-layers to drop on `held` rows
    (pruning.layer_drop), compensating each candidate on a few of `samples` as the run will
    (`compensation_mode`); `ties` (budget.Ties) and `ffn` (neurons.FFN_FORMS) hold for the
    candidates and the plan alike."""
    drop, measured = frozenset(), None
    if allocation == "measured":
        def plan_for(d):
            return budget.plan_pgb(refs, scores, target, gmax, nperm, tau, allocation="floor", drop=d,
                                   ties=ties)
        masks_of = (lambda p: neurons.keep_neurons(p, refs, scores)[1]) if ffn == "neurons" else Plan.masks
        drop, measured = layer_drop.choose(model, refs, plan_for, samples, held, progress=progress,
                                           compensation_mode=compensation_mode, masks_of=masks_of)
    plan, masks, pgb = ablations.build(ablation, refs, scores, target, bert.num_heads(model), gmax, nperm, tau,
                                       progress, "floor" if allocation == "measured" else allocation, drop,
                                       ties, ffn)
    if measured:
        pgb.meta.update(allocation="measured", measured=measured)
    return plan, masks, pgb, measured


def held_rows(train: list, used: list, seed: int) -> list:
    """HELD_ROWS training rows the importance samples did not use (all of `used` when the
    training set has no others)."""
    chosen = {id(e) for e in used}
    rest = [e for e in train if id(e) not in chosen]
    return random.Random(seed + 1).sample(rest, min(HELD_ROWS, len(rest))) if rest else list(used)


def prune(opts: PruneOptions) -> dict:
    """The whole application: load, sample, score, plan, compensate, re-finetune, save;
    returns report.json's content. OUT_DIR is written in one rename, or not at all."""
    progress = opts.progress
    seconds = {}
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - clock, 2)
        clock = now

    modeldir.check_output(opts.out, opts.inputs(), opts.force)  # before minutes of work, not after
    device = pick_device(opts.device)
    files = opts.data_files
    if opts.model_dir:
        modeldir.check_model_dir(opts.model_dir)
    if files is None:
        task = get_task(opts.task)
        splits = task.load(glue_dir(opts.glue_dir))
    if opts.model_dir:
        model_dir = Path(opts.model_dir)
    else:
        lap("load")
        model_dir = embedded_default(task, splits["train"].examples, opts)
        lap("embedded_finetune")
    model, tok = modeldir.load(model_dir, tokenizer_dir=opts.tokenizer)
    modeldir.check_single_label(model.config, model_dir)
    head = head_named(model)
    if files:  # the model says what the labels are; the files must use them
        task, splits = load_user_data(files, model.config, head)
    else:
        modeldir.check_head(model, task, model_dir)
    note_skipped(splits.values())
    modeldir.check_labels(model.config, task.num_labels, task.name)
    modeldir.name_labels(model.config, task.label_names)
    train, dev = splits["train"].examples, splits["dev"].examples
    max_len = modeldir.max_tokens(model.config, opts.max_len or task.max_len)
    model.to(device)
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    sample_rows = rng.sample(train, min(opts.samples, len(train)))
    inputs, pad = family(model).inputs, tok.pad_token_id or 0
    samples = make_batches(task.encode(tok, sample_rows, max_len, inputs, train=True), opts.batch_size, pad_id=pad)
    dev_batches = make_batches(task.encode(tok, dev, max_len, inputs, train=False), 64, pad_id=pad)
    lap("load")

    metrics = {"dense": evaluate(model, task, dev_batches, progress)}
    lap("dense_eval")
    scores = importance.score(model, samples, progress=progress)
    lap("importance")

    refs = bert.matrices(model)
    meta = {"target": opts.target, "gmax": opts.gmax, "nperm": opts.nperm,
            "samples": len(sample_rows), "seed": opts.seed, "fisher": "exact per-sample gradients"}
    tau = "auto" if opts.tau == "auto" else float(opts.tau)
    held = None
    if opts.allocation == "measured":
        held = make_batches(task.encode(tok, held_rows(train, sample_rows, opts.seed), max_len, inputs, train=True),
                            opts.batch_size, pad_id=pad)
    plan, masks, pgb, _ = build_plan(model, refs, scores, opts.target, ablation=opts.ablation,
                                     allocation=opts.allocation, gmax=opts.gmax, nperm=opts.nperm, tau=tau,
                                     samples=samples, held=held, progress=progress, ties=opts.ties,
                                     compensation_mode=opts.compensation, ffn=opts.ffn)
    plan.meta.update(meta)
    lap("planning")

    train_rows = train if opts.finetune_samples is None else rng.sample(train, min(opts.finetune_samples, len(train)))
    train_enc = task.encode(tok, train_rows, max_len, inputs, train=True) if opts.finetune_epochs > 0 else []
    steps = finetune.recovery_steps(len(train_enc), opts.batch_size, opts.finetune_epochs)
    lr = opts.lr if opts.lr is not None else recovery_lr(steps, opts.target)
    recovered, comp = recover(model, task, masks, samples, dev_batches, train_enc,
                              compensation_mode=opts.compensation, epochs=opts.finetune_epochs,
                              lr=lr, batch_size=opts.batch_size, seed=opts.seed,
                              progress=progress, pad_id=pad, lap=lap,
                              distill=distillation(opts.distill, opts.temperature, opts.distill_hidden))
    metrics.update(recovered)
    model.to("cpu")

    warnings = _collapse_warning(task, dev_batches, metrics["dense"], metrics["final"], opts)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    bad = repermute.violations(model, plan)
    if bad:  # cannot happen unless a step above is broken; never write such a model
        raise RuntimeError(f"weights outside the plan's blocks are non-zero in {bad[:3]}")

    kept_total, total = cost.kept_params(masks), cost.total_params(masks)
    report = {
        "task": task.name, "head": head.name, "main_metric": task.main_metric, "model_dir": str(model_dir),
        "source": opts.source or str(model_dir),
        "method": plan.meta.get("method"), "target": opts.target,
        "achieved_ratio": 1 - kept_total / total, "params_kept": kept_total, "params_total": total,
        "ratio_counts": "live weights: a matrix that a dropped partner makes dead counts as removed",
        "params_live": cost.kept_params(cost.live(refs, masks)),
        "flops_ratio": cost.flops_ratio(refs, masks, model.config.num_attention_heads, 128),
        "metrics": metrics, "warnings": warnings, "seconds": seconds, "device": str(device),
        "data": _data_report(splits),
        "recovery": {"steps": steps, "lr": lr, "lr_from": "--lr" if opts.lr is not None else
                     f"default: {LR_RULE}"},
        "settings": opts.settings(),
        "plan": {k: v for k, v in pgb.meta.items() if k in ("tau", "allocation", "tie_qkv", "tie_ffn", "ffn_order", "ffn_layers_kept",
                                                             "ffn_layers_dropped", "notes", "measured")},
        "matrices": [{"name": mp.name, "layer": mp.layer, "kind": mp.kind, "groups": mp.groups,
                      "size": mp.shape[0] * mp.shape[1], "kept": int(masks[mp.name].sum()), "captured": mp.captured,
                      "captured_if": grouping.capture_baselines(scores[mp.name], mp.groups),
                      **({"reconstruction": comp[mp.name]} if mp.name in comp else {})}
                     for mp in plan.matrices],
    }
    with modeldir.atomic_dir(opts.out, force=opts.force, inputs=opts.inputs()) as tmp:
        model.save_pretrained(tmp)
        modeldir.save_tokenizer(tok, tmp)
        plan.save(tmp / "pgb.json")
        (tmp / "README.md").write_text(_card(report))
        lap("save")
        write_atomic(tmp / "report.json", report)
    return report


# A final metric within this many points of the best constant prediction is a collapse; one
# that keeps less than this share of the dense model's lead over that prediction is far gone
# (STS-B at 0.88 with the CPU budget: Spearman 0.14 against 0.86, BENCHMARKS.md).
COLLAPSE_POINTS = 2.0
LEAD_KEPT = 0.5


def _collapse_warning(task, dev_batches: list, dense: dict, final: dict, opts: PruneOptions) -> list[str]:
    """Say so when the pruned model is no better than a constant prediction, or has lost most
    of what the dense model knew beyond one."""
    trivial = task.trivial(dev_batches)
    metric = task.main_metric
    if trivial is None:
        return []
    advice = (f"Recover longer (e.g. --finetune-epochs 3 --finetune-samples 8000) or with larger steps "
              f"(--lr 1e-4), try another --allocation, or prune less than {opts.target}")
    constant = "always predicting one class" if not task.is_regression else "a constant prediction"
    if dense[metric] <= trivial + COLLAPSE_POINTS / 100:  # nothing to lose: advice on recovery would mislead
        return [f"the dense model's {metric} {dense[metric]:.4f} is already no better than {constant} "
                f"({trivial:.4f}) on this dev set, so it cannot show what pruning kept: check that the model "
                f"was fine-tuned on this task and that the dev labels mean what its labels mean"]
    if final[metric] <= trivial + COLLAPSE_POINTS / 100:
        return [f"the pruned model's {metric} {final[metric]:.4f} is no better than {constant} "
                f"({trivial:.4f}): it has collapsed. {advice}"]
    lead = dense[metric] - trivial
    kept = (final[metric] - trivial) / lead if lead > 0 else 1.0
    if kept < LEAD_KEPT:
        return [f"the pruned model's {metric} {final[metric]:.4f} keeps {kept:.0%} of "
                f"the dense model's lead ({dense[metric]:.4f}) over {constant} ({trivial:.4f}). {advice}"]
    return []


def _card(report: dict) -> str:
    facts = {"task": report["task"], "method": report["method"], "target ratio": report["target"],
             "achieved ratio (prunable weights removed)": f"{report['achieved_ratio']:.4f}",
             "prunable weights kept": f"{report['params_kept']:,} of {report['params_total']:,}",
             "FLOPs ratio at 128 tokens": f"{report['flops_ratio']:.3f}",
             "layers": ", ".join(f"{k} {v}" for k, v in report["plan"].items() if k in ("ffn_layers_kept",
                                                                                     "ffn_layers_dropped"))}
    head = next(h for h in HEADS if h.name == report["head"])
    usage = (f"`{head.auto_class}.from_pretrained(dir)` computes the pruned model (its "
             "zeros included); `pgb.json` holds G and the permutations of every matrix (an FFN kept as "
             "whole neurons is G = 1 there, its other neurons zero in the weights), `report.json` "
             "everything measured. `pgb-export dir --out deploy` turns it into a grouped ONNX graph.")
    return card(f"{Path(report['source']).name}, PGB-pruned to {report['achieved_ratio']:.0%}",
                report["source"], head.name, "transformers", facts,
                report["metrics"], usage)


def _data_report(splits: dict[str, Split]) -> dict:
    return {name: {"source": s.source, "rows": s.rows, "used": len(s.examples), "skipped": s.skipped}
            for name, s in splits.items()}

"""The export application as one typed function: model directory -> deployment directory
(onnx/, report.json, README.md, and with the options a TensorRT engine and a Triton model
repository). pgb-export parses flags into ExportOptions and calls `export`; tests and
benchmarks call it directly.

Every check (outputs against PyTorch, the dev metric, TensorRT's parser, the plugin graph,
the engine) returns its own report; `export` gathers their failures and writes nothing when
there is one.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from pruning import bert, cost, modeldir, repermute
from pruning.batching import first_rows, make_batches, predict
from pruning.families import family
from pruning.heads import HEADS, QUESTION_ANSWERING, head_named
from pruning.jsonfile import write_atomic
from pruning.model_card import card
from pruning.plan import Plan, PlanError
from pruning.spans import best_span
from pruning.squad import QAExample, QATask, windows
from pruning.tasks import DataError, get_task, glue_dir, note_skipped
from pruning.userdata import DataFiles, load_user_data

from . import calibration, lowering, slicing, trt_compat, trt_engine
from .bert_graph import build, dense_plan
from .bert_io import BERT_IO
from .census import census, check_against_plan
from .deploy_readme import readme
from .grouped_linear import DYNAMIC_QMAX, PLUGIN_OP, LinearOptions
from .parity import FunctionSession, ParityError, check_outputs

# Real sentences for the output check when there is no dev set; question-answering models
# get them as (question, context) pairs of neighbours.
DEFAULT_TEXTS = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark a major career as a commercial yet inventive filmmaker .",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
    "it 's slow -- very , very slow .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious look at young women .",
]

# Windowing and decoding of a QA model exported without a QA task to take them from.
DEFAULT_QA = QATask("question-answering", allow_no_answer=False)

# Options that only mean something beside another one, and their defaults once that one is given.
DEPENDENT = {"trt": {"precision": "fp16", "max_seq": 128, "opt_seq": None, "timing_cache": None},
             "triton": {"triton_backend": "onnxruntime"}, "int8": {"attention": "fused", "grouping": "auto"}}

# The int8 graph's attention: ONNX Runtime's fused MultiHeadAttention, or the standard ONNX ops.
ATTENTION_FORMS = ("fused", "standard")

# The int8 graph's grouped linears: auto writes dense those whose copies cost more than their
# grouping saves (pgb_export.lowering); all keeps every one grouped.
GROUPINGS = ("auto", "all")

# Rows the QDQ graph's activation ranges are calibrated on: dev rows after the output-check
# texts, or those texts without a dev set (only one number per activation is fitted).
CALIBRATION_ROWS = 256
# How the QDQ graph's activation ranges are fitted to those rows (pgb_export.calibration).
CALIBRATION = "max"
# The calibration rows' largest output change the QDQ graph may have, in output units: below
# the int8 tolerance, since the fallback measures activations only (weights' int8 adds to it)
# and the output check runs other inputs. Fixed, not a share of that tolerance: when the
# tolerance grew from 1.0 to 2.0 (BERT_IO.atol_int8), what QDQ keeps in floating point stayed.
FALLBACK_BUDGET = 0.8


class OptionsError(ValueError):
    """Options that conflict, or one that would be silently ignored."""


@dataclass(frozen=True)
class ExportOptions:
    model_dir: str
    out: str
    task: str | None = None  # GLUE or squad / squad_v2: compare the dev metric too
    data_files: DataFiles | None = None  # the user's dev file instead of a task
    tokenizer: str | None = None
    glue_dir: str | None = None
    triton: bool = False
    triton_backend: str | None = None  # onnxruntime (default with triton) or python
    trt: bool = False
    precision: str | None = None  # engine precision, fp16 (default with trt), fp32 or int8 (QDQ graph)
    max_seq: int | None = None  # engine profile (default 128 with trt)
    opt_seq: int | None = None
    timing_cache: str | None = None
    plugin: bool = False
    fp16: bool = False
    int8: bool = False  # dynamic int8 ONNX for ONNX Runtime on CPU
    attention: str | None = None  # ATTENTION_FORMS, of the int8 graph (default fused)
    grouping: str | None = None  # GROUPINGS, of the int8 graph (default auto)
    calibration: str | None = None  # calibration.METHODS, of the QDQ graph (default CALIBRATION)
    opset: int = 17
    grouped_form: str = "split"
    permute_form: str = "transpose"
    max_len: int | None = None  # dev tokens per input; None: the task's default
    max_batch: int = 32
    force: bool = False
    progress: bool = True
    source: str | None = None  # the model as the user named it (a Hub id stays one)

    @property
    def writes_qdq(self) -> bool:
        """Whether the explicit-INT8 (QDQ) graph is written: with --int8, or for an INT8 engine."""
        return self.int8 or (self.trt and self.precision == "int8")

    def validated(self) -> ExportOptions:
        """These options with dependent defaults filled in; OptionsError for a conflict."""
        filled = {}
        for owner, options in DEPENDENT.items():
            for name, default in options.items():
                if getattr(self, name) is not None and not getattr(self, owner):
                    flag = name.replace("_", "-")
                    raise OptionsError(f"--{flag} only applies with --{owner}: add --{owner} or drop it")
                filled[name] = default if getattr(self, name) is None else getattr(self, name)
        opts = dataclasses.replace(self, **filled)
        if opts.int8:
            clash = next((f for f in ("fp16", "plugin", "trt") if getattr(opts, f)), None)
            if clash == "trt":
                raise OptionsError("--int8 is dynamic int8 for ONNX Runtime; for an INT8 TensorRT engine use "
                                   "--trt --precision int8")
            if clash:
                raise OptionsError(f"--int8 is dynamic int8 for ONNX Runtime; it does not combine with --{clash}")
        if opts.trt and opts.precision == "int8" and (opts.plugin or opts.fp16):
            raise OptionsError(f"--precision int8 builds the engine from the QDQ graph; it does not combine with "
                               f"--{'plugin' if opts.plugin else 'fp16'}")
        if self.calibration is not None and not opts.writes_qdq:
            raise OptionsError("--calibration sets the ranges of the QDQ graph, written with --int8 or "
                               "--trt --precision int8: add one of them or drop it")
        opts = dataclasses.replace(opts, calibration=opts.calibration or CALIBRATION)
        if opts.task and opts.data_files:
            raise OptionsError("--task reads GLUE or SQuAD data; --dev-file is for your own: give one or the other")
        if opts.trt and opts.opt_seq is not None and opts.opt_seq > opts.max_seq:
            raise OptionsError(f"--opt-seq {opts.opt_seq} is longer than --max-seq {opts.max_seq}")
        if opts.trt and (opts.task or opts.data_files) and opts.max_len and opts.max_len > opts.max_seq:
            raise OptionsError(f"--max-len {opts.max_len} is longer than the engine's --max-seq {opts.max_seq}: "
                               f"the dev set could not be fed to it")
        return opts

    def inputs(self) -> list:
        """Every path the run reads: --out must not overlap any of them."""
        return [self.model_dir, self.tokenizer, glue_dir(self.glue_dir) if self.task else None,
                *(self.data_files.paths() if self.data_files else [])]


def load_plan(model_dir: Path, model) -> Plan:
    """pgb.json checked against the weights beside it; a dense plan when there is none."""
    if not (model_dir / "pgb.json").exists():
        return dense_plan(model)
    plan = Plan.load(model_dir / "pgb.json")
    plan.check_matches(bert.matrices(model))
    bad = repermute.violations(model, plan)
    if bad:
        raise PlanError(f"weights are non-zero outside the pgb.json blocks in {bad[0]}"
                        + (f" and {len(bad) - 1} more" if len(bad) > 1 else ""))
    return plan


def graph_masks(model, plan: Plan) -> dict:
    """Where a graph of `plan` holds weights: the plan's blocks, less the heads and FFN
    neurons that add nothing (pgb_export.slicing). Its live count is what the graph stores."""
    return slicing.sliced_masks(slicing.layer_slices(model, plan), plan, plan.masks())


def session(model_bytes: bytes, threads: int = 2, spinning: bool = True):
    """An ONNX Runtime CPU session. spinning=False lets its idle worker threads sleep: for a
    process that holds many sessions and runs one at a time (the latency benchmark), where the
    idle ones' spinning would take the cores from the one at work."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def runner(sess):
    """feeds -> {output name: array} over an ONNX Runtime session."""
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds)))


class DevSet:
    """The task's dev set, batched, with PyTorch's outputs computed once; each exported
    runtime is compared against them on the task's own metric."""

    def __init__(self, task, batches: list, torch_outputs: list[dict], inputs: tuple[str, ...]):
        self.task, self.batches, self.inputs = task, batches, inputs
        self.torch_metrics = task.score(torch_outputs, batches)

    def lengths(self) -> np.ndarray:
        return np.concatenate([b["attention_mask"].sum(1).numpy() for b in self.batches])

    def compare(self, runtime: str, run, tolerance: float) -> dict:
        """The task metric of `run` (feeds -> {output: array}) beside PyTorch's; a gap above
        `tolerance` points is this report's failure."""
        outputs = [run({k: b[k].numpy() for k in self.inputs}) for b in self.batches]
        mine, metric = self.task.score(outputs, self.batches), self.task.main_metric
        gap = abs(self.torch_metrics[metric] - mine[metric]) * 100
        failure = None if gap <= tolerance else (
            f"{runtime} {metric} differs by {gap:.3f} points on the {self.task.name} dev set "
            f"(pytorch {self.torch_metrics[metric]:.4f}, {runtime} {mine[metric]:.4f})")
        return {"task": self.task.name, "metric": metric, "rows": sum(len(b["input_ids"]) for b in self.batches),
                "pytorch": self.torch_metrics, runtime: mine, "difference_points": gap,
                "tolerance_points": tolerance, "ok": failure is None, "failures": [failure] if failure else []}


def _dev_data(opts: ExportOptions, model):
    """(task, dev Split) from --task or the user's dev file, or (None, None)."""
    if opts.data_files or opts.task:
        modeldir.check_single_label(model.config, opts.model_dir)
    if opts.data_files:
        task, splits = load_user_data(opts.data_files, model.config, head_named(model))
        return task, splits["dev"]
    if not opts.task:
        return None, None
    task = get_task(opts.task)
    modeldir.check_head(model, task, opts.model_dir)
    return task, task.load(glue_dir(opts.glue_dir), ("dev",))["dev"]


def _texts(dev, head_per_token: bool) -> list:
    """Up to 64 real inputs for the output checks: the dev set's, else DEFAULT_TEXTS."""
    if dev:
        return [e.texts for e in dev.examples[:64]]
    if head_per_token:
        return list(zip(DEFAULT_TEXTS, DEFAULT_TEXTS[1:] + DEFAULT_TEXTS[:1]))
    return DEFAULT_TEXTS


def failures(report: dict) -> list[str]:
    """Every failure the checks in `report` recorded, each named by its check."""
    out = list(report["parity"]["failures"])
    out += report.get("accuracy", {}).get("failures", [])
    out += [f"QDQ graph: {f}" for f in report.get("qdq", {}).get("failures", [])]
    out += [f"plugin graph: {f}" for f in report.get("plugin_graph", {}).get("failures", [])]
    trt = report.get("tensorrt", {})
    out += [f"TensorRT: {f}" for f in trt.get("parity", {}).get("failures", []) + trt.get("accuracy", {}).get("failures", [])]
    return out


def export(opts: ExportOptions) -> dict:
    """The whole application; returns report.json's content. ParityError (nothing written)
    when a check fails."""
    t0 = time.perf_counter()
    opts = opts.validated()
    if opts.trt:
        trt_engine.require_tensorrt(plugin=opts.plugin)
    if opts.triton:
        from .triton import require_tritonclient
        require_tritonclient()
    modeldir.check_output(opts.out, opts.inputs(), opts.force)  # before minutes of work, not after
    model_dir = modeldir.check_model_dir(opts.model_dir)
    model, tok = modeldir.load(model_dir, tokenizer_dir=opts.tokenizer)
    head = head_named(model)
    task, dev = _dev_data(opts, model)
    note_skipped([dev])
    if task:
        modeldir.check_labels(model.config, task.num_labels, task.name)
        modeldir.name_labels(model.config, task.label_names)
    plan = load_plan(model_dir, model)
    # the plan model.onnx is written from: the int8 graph may write some grouped linears dense
    dense = lowering.dense_cheaper(plan) if opts.int8 and opts.grouping == "auto" else []
    written = lowering.densified(plan, dense)

    graph = _graph(model, written, opts, plugin=False, fp16=opts.fp16)
    precision = "int8" if opts.int8 else "fp16" if opts.fp16 else "fp32"
    atol, metric_tol = BERT_IO.tolerances(precision)
    onnx.checker.check_model(graph, full_check=True)
    # the int8 graph is ONNX Runtime's (dynamic quantization); TensorRT takes QDQ graphs instead
    compat = ({"ok": None, "skipped": "the --int8 graph is for ONNX Runtime; TensorRT INT8 engines take "
                                      "onnx/model.qdq.onnx (checked in report.json qdq)"}
              if opts.int8 else trt_compat.check(graph).to_json())
    counts = census(graph)
    refs = bert.matrices(model)
    masks = graph_masks(model, plan)
    live_kept = cost.kept_params(cost.live(refs, masks))
    stored = cost.kept_params(cost.live(refs, graph_masks(model, written)))  # plus the zeros of `dense`
    check_against_plan(counts, stored)
    data = graph.SerializeToString()
    sess = session(data)

    texts = _texts(dev, head.per_token)
    parity = check_outputs(sess, model, tok, texts, atol)
    report = {"model_dir": str(model_dir), "source": opts.source or str(model_dir), "head": head.name,
              "inputs": list(family(model).inputs), "outputs": list(head.outputs), "method": plan.meta.get("method", "pgb"),
              "graph": {"opset": opts.opset, "precision": precision,
                        "grouped_form": opts.grouped_form, "attention": opts.attention or "standard",
                        "permute_form": opts.permute_form, "nodes": len(graph.graph.node),
                        "grouping": opts.grouping or "all", "written_dense": dense, "census": counts,
                        # signed bits of the dynamic INT8 graph's weights (grouped_linear.DYNAMIC_QMAX)
                        **({"weight_bits": DYNAMIC_QMAX.bit_length() + 1,
                            "word_embeddings": "int8, one scale per row"} if opts.int8 else {})},
              # live is what the graph computes with (pgb-prune's params_live); a structured plan's
              # blocks (plan_blocks) also hold the zero rows and columns that slicing leaves out
              "params": {"live": live_kept, "stored": stored, "total": plan.total,
                         "ratio": 1 - live_kept / plan.total, "plan_blocks": plan.kept},
              "flops_ratio": cost.flops_ratio(refs, masks, model.config.num_attention_heads, 128),
              "onnx_bytes": len(data), "parity": parity.to_json(), "tensorrt_compat": compat}
    report["warnings"] = _unchecked(opts, task, model, len(texts))
    dev_set = None
    max_len = modeldir.max_tokens(model.config, opts.max_len or (task or head).max_len)
    if task:
        # batches no larger than the TensorRT profile allows, so both runtimes share them
        batches = make_batches(task.encode(tok, dev.examples, max_len, family(model).inputs, train=False),
                               opts.max_batch, pad_id=tok.pad_token_id or 0)
        dev_set = DevSet(task, batches, predict(model, batches, progress=opts.progress), family(model).inputs)
        report["accuracy"] = dev_set.compare("onnx", runner(sess), metric_tol)
    extra_files = {}
    qdq = None
    if opts.writes_qdq:
        rows = _calibration_batches(model, tok, texts, dev_set, max_len)
        qdq, report["qdq"] = check_qdq_graph(model, plan, opts, tok, texts, rows, dev_set, live_kept)
        extra_files["onnx/model.qdq.onnx"] = qdq.SerializeToString()
    if opts.plugin:
        plugin_graph = _graph(model, plan, opts, plugin=True, fp16=opts.fp16)
        report["plugin_graph"] = check_plugin_graph(plugin_graph, model, tok, texts, atol, live_kept)
        extra_files["onnx/model.plugin.onnx"] = plugin_graph.SerializeToString()
    if opts.trt:
        engine, report["tensorrt"] = build_and_check_engine(opts, model, plan, tok, texts, dev_set, qdq)
        extra_files["trt/model.plan"] = engine
        extra_files["trt/build.json"] = json.dumps(report["tensorrt"]["build"], indent=1).encode()
    problems = failures(report)
    if problems:
        raise ParityError("; ".join(problems))

    with modeldir.atomic_dir(opts.out, force=opts.force, inputs=opts.inputs()) as tmp:
        for rel, content in extra_files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(content)
        (tmp / "onnx").mkdir(exist_ok=True)
        (tmp / "onnx" / "model.onnx").write_bytes(data)
        model.config.save_pretrained(tmp / "onnx")
        modeldir.save_tokenizer(tok, tmp / "onnx")
        example = None
        if opts.triton:
            report["triton"], example = _write_triton(tmp, model, tok, task, dev, sess, max_len, opts, report)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        write_atomic(tmp / "report.json", report)
        (tmp / "README.md").write_text(_card(report) + "\n" + readme(report, example))
    return report


def _write_triton(tmp: Path, model, tok, task, dev, sess, max_len: int, opts: ExportOptions,
                  report: dict) -> tuple[list[dict], dict | None]:
    """The repository (pgb_bert, the text models, the engine's model) and one raw-text
    request with the answer this export gives it, for the deploy README."""
    from .triton import engine_notes, write_repository, write_text_models
    head = head_named(model)
    written = [write_repository(tmp / "triton", tmp / "onnx" / "model.onnx", model.config, head, opts.max_batch,
                                opts.triton_backend)]
    if opts.trt:
        written.append(write_repository(tmp / "triton", tmp / "trt" / "model.plan", model.config, head,
                                        opts.max_batch, "tensorrt", "pgb_bert_trt",
                                        engine_notes(report["tensorrt"]["build"])))
    tokenizer_json = tmp / "onnx" / "tokenizer.json"
    if not tokenizer_json.is_file():  # a slow tokenizer: no raw-text models, said in report.json
        return written + [{"model": "pgb_text", "skipped": "the tokenizer has no tokenizer.json (not a fast tokenizer)"}], None
    qa = task if task is not None and task.head is QUESTION_ANSWERING else DEFAULT_QA
    written += write_text_models(tmp / "triton", tokenizer_json, model.config, head, opts.max_batch, max_len,
                                 tok.pad_token_id or 0, tok.pad_token or "[PAD]",
                                 allow_no_answer=qa.allow_no_answer, doc_stride=qa.doc_stride)
    return written, serving_example(model, tok, runner(sess), dev, max_len, written[-1]["model"], qa)


def serving_example(model, tok, run, dev, max_len: int, name: str, qa: QATask = DEFAULT_QA) -> dict:
    """One raw-text request (the dev set's first input, else a default) and what the export
    answers: the label (or score) for a classifier, the span and its score for QA (windowed
    and decoded as `qa` says, as the served model does)."""
    inputs = family(model).inputs
    if head_named(model) is QUESTION_ANSWERING:
        ex = dev.examples[0] if dev else QAExample("0", "how slow is it ?", DEFAULT_TEXTS[4], (), ())
        feats = windows(tok, [ex], max_len, qa.doc_stride, inputs, train=False)
        batch = make_batches(feats, len(feats), pad_id=tok.pad_token_id or 0)[0]
        out = run({k: batch[k].numpy() for k in inputs})
        answer, score = best_span(ex.context, [(s, e, f["offsets"]) for s, e, f in
                                               zip(out["start_logits"], out["end_logits"], feats)],
                                  qa.allow_no_answer)
        return {"model": name, "inputs": {"question": ex.question, "context": ex.context},
                "expected": {"answer": answer, "score": round(score, 4)}}
    text = dev.examples[0].texts if dev else DEFAULT_TEXTS[0]
    pair = text if isinstance(text, tuple) else (text, None)
    enc = tok(pair[0], pair[1], truncation=True, max_length=max_len, return_tensors="np")
    logits = run({k: enc[k].astype(np.int64) for k in inputs})["logits"][0]
    if model.config.num_labels == 1:
        expected = {"label": f"{logits[0]:.6g}"}
    else:
        expected = {"label": str(model.config.id2label[int(logits.argmax())])}
    return {"model": name, "inputs": {"text": pair[0], **({"text_pair": pair[1]} if pair[1] else {})},
            "expected": expected}


def _graph(model, plan: Plan, opts: ExportOptions, *, plugin: bool, fp16: bool,
           qdq: dict[str, float] | None = None) -> onnx.ModelProto:
    form = "split" if qdq is not None else opts.grouped_form  # per-block weight scales: one MatMul per block
    ort_only = opts.int8 and qdq is None  # the dynamic INT8 graph: ONNX Runtime runs it, TensorRT never does
    linear = LinearOptions(form, opts.permute_form, plugin=plugin, int8=ort_only, qdq=qdq,
                           ort_attention=ort_only and opts.attention == "fused")
    graph = build(model, plan, linear, np.float16 if fp16 else np.float32)
    graph.opset_import[0].version = opts.opset
    return graph


def _unchecked(opts: ExportOptions, task, model, texts: int) -> list[str]:
    """What a quantized export could not check without dev data: the INT8 graphs' task metric,
    and QDQ ranges fitted on more than the few built-in texts."""
    if task or not opts.writes_qdq:
        return []
    hint = "--task or --dev-file"
    named = getattr(model.config, "finetuning_task", None)
    if named:
        try:
            hint = f"--task {get_task(named).name}"
        except DataError:  # a task of the user's own: their dev file
            pass
    return [f"no dev data: the INT8 task metric is not checked, and the QDQ ranges are fitted on the {texts} "
            f"built-in texts only; add {hint} to check it within {BERT_IO.tolerances('int8')[1]:g} point "
            f"and calibrate on {CALIBRATION_ROWS} dev rows"]


def _calibration_batches(model, tok, texts: list, dev_set: DevSet | None, max_len: int) -> list[dict]:
    """CALIBRATION_ROWS dev rows after the output-check texts (the dev set's first rows), so
    that check sees inputs the calibration did not; else the texts themselves."""
    if dev_set:
        after = dev_set.batches[len(first_rows(dev_set.batches, len(texts))):]
        return first_rows(after or dev_set.batches, CALIBRATION_ROWS)
    a, b = zip(*texts) if isinstance(texts[0], tuple) else (texts, None)
    enc = tok(list(a), list(b) if b else None, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return [{k: enc[k] for k in family(model).inputs if k in enc}]


def check_qdq_graph(model, plan: Plan, opts: ExportOptions, tok, texts, rows: list[dict], dev_set: DevSet | None,
                    stored: int) -> tuple[onnx.ModelProto, dict]:
    """The explicit-INT8 (QDQ) graph TensorRT builds INT8 engines from, calibrated on `rows`
    (ranges, and the linears left in floating point), checked where TensorRT is not needed:
    ONNX's checker, TensorRT's parser table, the census, and its outputs and dev metric
    through ONNX Runtime against PyTorch fp32."""
    atol, tol = BERT_IO.tolerances("int8")
    ranges = calibration.input_ranges(model, rows, opts.calibration)
    floats, fallback = calibration.float_fallback(model, rows, ranges, FALLBACK_BUDGET)
    graph = _graph(model, plan, opts, plugin=False, fp16=False,
                   qdq={n: a for n, a in ranges.items() if n not in floats})
    onnx.checker.check_model(graph, full_check=True)
    compat = trt_compat.check(graph)
    counts = census(graph)
    check_against_plan(counts, stored)
    sess = session(graph.SerializeToString())
    parity = check_outputs(sess, model, tok, texts, atol)
    out = {"file": "onnx/model.qdq.onnx",
           "purpose": "explicit INT8 for TensorRT engines (--trt --precision int8); run here by ONNX Runtime only",
           "calibration": {"rows": sum(len(b["input_ids"]) for b in rows),
                           "source": ("dev set, the rows after the output-check texts" if dev_set
                                      else "the output-check texts"),
                           "method": opts.calibration,
                           "quantization": "activations symmetric int8 per tensor, one range per linear's "
                                           "input; weights per output channel",
                           "ranges": ranges, "float_linears": floats, "fallback": fallback},
           "census": counts, "tensorrt_compat": compat.to_json(), "parity": parity.to_json()}
    if dev_set:
        out["accuracy"] = dev_set.compare("onnx_qdq", runner(sess), tol)
    out["failures"] = (parity.failures + out.get("accuracy", {}).get("failures", [])
                       + [f"TensorRT parser: {p}" for p in compat.problems])
    return graph, out


def check_plugin_graph(graph, model, tok, texts, atol, stored: int) -> dict:
    """The plugin graph on the CPU: TensorRT-parser check with the pgb domain, and outputs
    through onnx.reference with the custom node's numpy semantics (plugins.reference)."""
    from onnx.reference import ReferenceEvaluator

    from plugins.reference import GroupedLinear
    compat = trt_compat.check(graph, plugin_domain="pgb")
    counts = census(graph)
    check_against_plan(counts, stored)
    evaluator = ReferenceEvaluator(graph, new_ops=[GroupedLinear])
    names = head_named(model).outputs
    ref = check_outputs(FunctionSession(lambda f: dict(zip(names, evaluator.run(None, f))), names),
                        model, tok, texts, atol, batch_sizes=(1, 4), lengths=(16, 64))
    kernels = _prove_plugin_kernels(graph)
    problems = (ref.failures + compat.problems
                + [f"kernel: {k['error']}" for k in kernels.get("kernels", []) if "error" in k])
    return {"census": counts, "parity": ref.to_json(), "tensorrt_compat": compat.to_json(), "kernels": kernels,
            "ok": not problems, "failures": problems}


def _prove_plugin_kernels(graph: onnx.ModelProto) -> dict:
    """Each distinct kernel the plugin graph needs, compiled for the H100 (sm_90a) and
    assembled by ptxas (plugins.aot), as far as a machine without a GPU can take it."""
    if importlib.util.find_spec("triton") is None:
        return {"checked": False, "reason": "Triton-lang is not installed (pip install -e '.[kernels]')"}
    from plugins.aot import KernelSpec, prove_in_child

    inits = {t.name: t for t in graph.graph.initializer}
    dtypes = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}
    specs = set()
    for node in graph.graph.node:
        if node.op_type == PLUGIN_OP:
            blocks = inits[node.input[1]]
            g, br, bc = blocks.dims
            specs.add(KernelSpec(dtypes[blocks.data_type], g * br, g * bc, g))
    return {"checked": True, "kernels": prove_in_child(sorted(specs, key=str))}


def build_and_check_engine(opts: ExportOptions, model, plan, tok, texts, dev_set: DevSet | None,
                           qdq: onnx.ModelProto | None = None) -> tuple[bytes, dict]:
    """The TensorRT engine (polygraphy), and its outputs and dev metric against PyTorch; an
    int8 engine is built from the QDQ graph."""
    fp16 = opts.precision == "fp16"
    graph = qdq if opts.precision == "int8" else _graph(model, plan, opts, plugin=opts.plugin, fp16=fp16)
    opt_seq = opts.opt_seq or (int(np.percentile(dev_set.lengths(), 95)) if dev_set else 64)
    spec = trt_engine.EngineSpec(opts.precision, opts.max_batch, opts.max_seq, max(1, opts.max_batch // 2),
                                 min(opt_seq, opts.max_seq))
    cache = Path(opts.timing_cache) if opts.timing_cache else trt_engine.default_timing_cache(modeldir.cache_dir())
    engine, info = trt_engine.build(graph.SerializeToString(), spec, cache, plugin=opts.plugin)
    atol, tol = BERT_IO.tolerances(opts.precision)
    batch_sizes, lengths = spec.parity_shapes()
    with trt_engine.open_engine(engine, plugin=opts.plugin) as run:
        check = check_outputs(FunctionSession(run, head_named(model).outputs), model, tok, texts, atol,
                              batch_sizes, lengths)
        out = {"build": info, "parity": check.to_json()}
        if dev_set:
            out["accuracy"] = dev_set.compare("tensorrt", run, tol)
    return engine, out


def _card(report: dict) -> str:
    facts = {"method": report["method"], "precision": report["graph"]["precision"],
             "prunable weights kept (live)": f"{report['params']['live']:,} of {report['params']['total']:,}",
             "FLOPs ratio at 128 tokens": f"{report['flops_ratio']:.3f}",
             "parity, max abs output difference": f"{report['parity']['max_abs_diff']:.2e} "
                                                  f"(tolerance {report['parity']['atol']:g})"}
    acc = report.get("accuracy")
    metrics = {runtime: acc[runtime] for runtime in ("pytorch", "onnx")} if acc else None
    head = next(h for h in HEADS if h.name == report["head"])
    usage = ("`onnx/` is a Hugging Face ONNX model directory (model.onnx, config.json, tokenizer): ONNX "
             f"Runtime, or optimum's ORT{head.auto_class[4:]}, loads it. `triton/` (with "
             "--triton) is a Triton Inference Server model repository; `report.json` holds every check.")
    return card(f"{Path(report['source']).name}, exported for serving", report["source"],
                head.name, "onnx", facts, metrics, usage)

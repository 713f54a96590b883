"""GLUE tasks: where their files are, how to read each TSV, labels and official metrics.

Local TSVs are read with quoting disabled (QNLI has stray quotes, MRPC a byte-order mark,
CoLA no header); the Hub (`datasets`) is the fallback when no local copy is found.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .heads import SEQUENCE_CLASSIFICATION


class DataError(ValueError):
    """Task data is missing or unreadable."""


class Example(NamedTuple):
    text_a: str
    text_b: str | None
    label: float | int

    @property
    def texts(self) -> str | tuple[str, str]:
        """What the tokenizer takes: the text, or the pair."""
        return self.text_a if self.text_b is None else (self.text_a, self.text_b)


@dataclass(frozen=True)
class Task:
    name: str
    folder: str  # under the GLUE directory
    text: tuple  # column names, or indices where the file has no header
    label: str | int
    labels: tuple[str, ...] | None  # label strings in class-index order; None = regression
    main_metric: str
    header: bool = True
    dev_file: str = "dev.tsv"
    hub_text: tuple[str, ...] = ("sentence1", "sentence2")
    hub_dev: str = "validation"
    names: tuple[str, ...] | None = None  # human names of the classes (the Hub's GLUE label names)
    head = SEQUENCE_CLASSIFICATION
    max_len = SEQUENCE_CLASSIFICATION.max_len

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def label_names(self) -> tuple[str, ...] | None:
        """Class names for id2label: the Hub's where the files' labels are bare digits."""
        return self.names or self.labels

    def load(self, directory: Path | None, splits: tuple[str, ...] = ("train", "dev")) -> dict[str, "Split"]:
        """The task's splits from a GLUE directory (None: the Hub)."""
        return {s: load_split(self, s, directory) for s in splits}

    def encode(self, tokenizer, examples, max_len: int, inputs, train: bool) -> list[dict]:
        from .batching import encode
        return encode(tokenizer, examples, max_len, inputs)

    def trivial(self, batches) -> float | None:
        """The main metric of the best constant prediction (always one class; for regression
        a constant, whose correlation with anything is 0): a model at or below it has learned
        nothing."""
        if self.is_regression:
            return 0.0
        labels = np.concatenate([b["labels"].numpy() for b in batches])
        return max(metrics(self, np.eye(self.num_labels)[np.full(len(labels), c)], labels)[self.main_metric]
                   for c in range(self.num_labels))

    def score(self, outputs, batches) -> dict[str, float]:
        """Official metrics from per-batch outputs ({"logits": ...}) and the batches' labels."""
        return metrics(self, np.concatenate([o["logits"] for o in outputs]),
                       np.concatenate([b["labels"].numpy() for b in batches]))


# Label orders follow the Hub's GLUE configs, so Hub-trained checkpoints agree with ours.
TASKS = {t.name: t for t in (
    Task("sst2", "SST-2", ("sentence",), "label", ("0", "1"), "accuracy", hub_text=("sentence",),
         names=("negative", "positive")),
    Task("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), "accuracy",
         names=("not_equivalent", "equivalent")),
    Task("rte", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), "accuracy"),
    Task("cola", "CoLA", (3,), 1, ("0", "1"), "mcc", header=False, hub_text=("sentence",),
         names=("unacceptable", "acceptable")),
    Task("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, "spearman"),
    Task("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
         "accuracy", hub_text=("question", "sentence")),
    Task("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), "accuracy",
         hub_text=("question1", "question2"), names=("not_duplicate", "duplicate")),
    Task("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
         ("entailment", "neutral", "contradiction"), "accuracy", dev_file="dev_matched.tsv",
         hub_text=("premise", "hypothesis"), hub_dev="validation_matched"),
    Task("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("0", "1"), "accuracy",
         names=("not_entailment", "entailment")),
)}


def get_task(name: str):
    """A GLUE Task, or a SQuAD QATask (pruning.squad), by name."""
    from .squad import SQUAD
    task = TASKS.get(name.lower()) or SQUAD.get(name.lower())
    if task is None:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join([*TASKS, *SQUAD])}")
    return task


def fixture_task(model_dir: str | os.PathLike) -> Task:
    """The task a ../shared/models fixture was fine-tuned on, from its fixture.json."""
    return get_task(json.loads((Path(model_dir) / "fixture.json").read_text())["task"])


def glue_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """--glue-dir, else $PGB_GLUE_DIR, else ../shared/data/glue (from the working directory
    or from this checkout) when present; None means: use the Hub."""
    if explicit:
        return Path(explicit)
    if os.environ.get("PGB_GLUE_DIR"):
        return Path(os.environ["PGB_GLUE_DIR"])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "data" / "glue"
        if candidate.is_dir():
            return candidate
    return None


# Rows that cannot be read (too few columns, a label the task does not have, a score that
# is not a number) are skipped and counted; above this fraction of the file the data is
# refused: it is more likely the wrong file or format than a few stray lines (the original
# QQP files have 0.01 % of them).
MAX_SKIPPED = 0.05


@dataclass(frozen=True)
class Split:
    """One split of a task as read: its examples and what was skipped on the way."""

    examples: list[Example]
    source: str
    rows: int  # data rows in the source, header excluded
    skipped: int
    first_skipped: str = ""  # where and why, for the note

    def note(self) -> str | None:
        if not self.skipped:
            return None
        return (f"{self.source}: skipped {self.skipped} of {self.rows} rows that could not be read "
                f"(first: {self.first_skipped})")


def note_skipped(splits) -> None:
    """Say on stderr which splits had unreadable rows (their count is also in report.json)."""
    for split in splits:
        if split and split.note():
            print(f"note: {split.note()}", file=sys.stderr)


def _read_tsv(task: Task, path: Path) -> Split:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path} is not UTF-8 text (line {line}, byte {e.start})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    except csv.Error as e:
        raise DataError(f"{path} is not a readable TSV file: {e}") from None
    rows = [r for r in rows if r]  # blank lines
    if task.header:
        if not rows:
            raise DataError(f"{path} is empty")
        head, rows = rows[0], rows[1:]
        try:
            cols = [head.index(c) for c in task.text]
            label_col = head.index(task.label)
        except ValueError:
            raise DataError(f"{path} does not have the {task.name} columns {task.text + (task.label,)}") from None
    else:
        cols, label_col = list(task.text), task.label
    if not rows:
        raise DataError(f"{path} has no data rows")
    need = max(cols + [label_col]) + 1
    first_line = 2 if task.header else 1
    out, skipped, first = [], 0, ""
    for n, row in enumerate(rows, first_line):
        problem = None
        if len(row) < need:
            problem = f"{len(row)} columns, {need} needed"
        else:
            label = row[label_col]
            if task.is_regression:
                try:
                    y = float(label)
                except ValueError:
                    y = math.nan
                if not math.isfinite(y):
                    problem = f"score {label!r:.20} is not a number"
            elif label in task.labels:
                y = task.labels.index(label)
            else:
                problem = f"label {label!r:.20} is not one of {', '.join(task.labels)}"
        if problem:
            skipped += 1
            first = first or f"line {n}: {problem}"
            continue
        out.append(Example(row[cols[0]], row[cols[1]] if len(cols) > 1 else None, y))
    if not out or skipped > MAX_SKIPPED * len(rows):
        raise DataError(f"{path}: {skipped} of {len(rows)} rows cannot be read as {task.name} (first: {first}); "
                        f"is it the right file?")
    return Split(out, str(path), len(rows), skipped, first)


def hub_dataset(kind: str, label: str, *args, **kwargs):
    """datasets.load_dataset(*args, **kwargs), used when no local `kind` ("GLUE", "SQuAD") copy was
    found: any failure is one DataError saying where a local copy would go."""
    where = f"no local {kind} data found (give --glue-dir or set PGB_GLUE_DIR), and"
    try:
        import datasets
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:
        raise DataError(f"{where} the Hub fallback needs `pip install datasets`") from None
    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # the Hub client logs every retry of an unreachable host: two lines each
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # the Hub raises many types; all mean the same to the user
        raise DataError(f"{where} could not load {label} from the Hub: {' '.join(str(e).split())}"[:400]) from None
    finally:
        hub_logging.set_verbosity(verbosity)


def _from_hub(task: Task, split: str) -> list[Example]:
    ds = hub_dataset("GLUE", f"{task.name}/{split}", "nyu-mll/glue", task.name, split=split)
    cols = task.hub_text
    examples = [Example(r[cols[0]], r[cols[1]] if len(cols) > 1 else None, r["label"]) for r in ds]
    return Split(examples, f"nyu-mll/glue {task.name}/{split}", len(examples), 0)


def load_split(task: Task, split: str, directory: Path | None) -> Split:
    """split is "train" or "dev"."""
    if directory is None:
        return _from_hub(task, "train" if split == "train" else task.hub_dev)
    path = Path(directory) / task.folder / ("train.tsv" if split == "train" else task.dev_file)
    if not path.is_file():
        raise DataError(f"missing {split} data for {task.name}: {path} does not exist")
    return _read_tsv(task, path)


def metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's official metrics. predictions: logits (n, num_labels) or scores (n,)."""
    labels = np.asarray(labels)
    if task.is_regression:
        p = np.asarray(predictions).reshape(-1)
        return {"pearson": _correlation(pearsonr, p, labels), "spearman": _correlation(spearmanr, p, labels)}
    p = np.asarray(predictions).argmax(-1)
    with warnings.catch_warnings():  # a dev set of one class: sklearn warns, and its MCC of 0 is the right figure
        warnings.simplefilter("ignore")
        out = {"accuracy": float(accuracy_score(labels, p)), "mcc": float(matthews_corrcoef(labels, p))}
    if task.num_labels == 2:
        out["f1"] = float(f1_score(labels, p, zero_division=0.0))
    return out


def _correlation(fn, predictions: np.ndarray, labels: np.ndarray) -> float:
    # a constant prediction carries no information: 0, which is what the collapse check compares with
    if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    return float(fn(predictions, labels)[0])

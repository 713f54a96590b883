"""Users' own labelled data: CSV, TSV, JSON, JSONL or Parquet files read through `datasets`'
local loaders (no Hub), with the columns the user names and the labels the model knows.

The task is the model's: its classes are the model's id2label (string labels map through
label2id), one output means regression; the metric is accuracy (with F1 for two classes and
MCC) or Pearson/Spearman. A question-answering model takes SQuAD-format JSON, or rows with a
question, a context and SQuAD's answers {text, answer_start}; its metric is EM / F1, with
"no answer" a prediction when some question of the files has none.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .heads import QUESTION_ANSWERING, Head
from .squad import QATask, load_qa_rows, read_squad_json, squad_split
from .tasks import MAX_SKIPPED, DataError, Example, Split, Task

FORMATS = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}), ".json": ("json", {}),
           ".jsonl": ("json", {}), ".parquet": ("parquet", {})}
# Column names tried, in order, when --text-column / --text-pair-column is not given.
TEXT_COLUMNS = ("text", "sentence", "sentence1", "question", "review", "content")
PAIR_COLUMNS = {"sentence1": "sentence2", "question": "sentence", "question1": "question2"}


@dataclass(frozen=True)
class DataFiles:
    train: str | None
    dev: str | None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None  # None: "label" (classification), "answers" (QA)

    def paths(self) -> list[str]:
        return [p for p in (self.train, self.dev) if p]


def user_task(config, name: str) -> Task:
    """The task a model defines: its classes, or regression for one output."""
    if config.num_labels == 1:
        return Task(name, "", (), "", None, "spearman")
    names = tuple(str(config.id2label[i]) for i in range(config.num_labels))
    return Task(name, "", (), "", names, "accuracy")


def _placeholder(names: tuple[str, ...]) -> bool:
    return all(re.fullmatch(r"LABEL_\d+", n) for n in names)


def _label(value, task: Task, path: str, row: int):
    """The class index (or score) of one label, or None when the row has none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if task.is_regression:
        try:
            y = float(value)
        except (TypeError, ValueError):
            return None
        return y if math.isfinite(y) else None
    text = str(value).strip()
    if text in task.labels:
        return task.labels.index(text)
    # class indices: ints, whole floats (a CSV column with gaps reads as float), booleans, digits
    number = float(value) if isinstance(value, (bool, int, float)) else float(text) if text.lstrip("-").isdigit() else None
    if number is not None and number.is_integer() and 0 <= number < len(task.labels):
        return int(number)
    hint = (" (the model's config.json names no classes: use class indices 0.."
            f"{len(task.labels) - 1}, or give it id2label)") if _placeholder(task.labels) else ""
    raise DataError(f"{path} row {row}: label {text!r:.40} is not one the model knows "
                    f"({', '.join(task.labels)}){hint}")


# the columns of SQuAD-format JSON read as rows, and of SQuAD-style rows
QA_COLUMN_SETS = ({"version", "data"}, {"question", "context", "answers"})


def _columns(names: list[str], files: DataFiles, path: str) -> tuple[str, str | None, str]:
    if not (files.text_column or files.label_column) and any(s <= set(names) for s in QA_COLUMN_SETS):
        raise DataError(f"{path} holds question-answering data (columns {', '.join(names)}), but the model is "
                        f"a sequence classifier; give a *ForQuestionAnswering model, or name the columns "
                        f"with --text-column and --label-column")

    def need(col: str, flag: str) -> str:
        if col not in names:
            raise DataError(f"{path} has no column {col!r} ({flag}); its columns are {', '.join(names)}")
        return col
    text = need(files.text_column, "--text-column") if files.text_column else next(
        (c for c in TEXT_COLUMNS if c in names), None)
    if text is None:
        raise DataError(f"{path}: which column is the text? Give --text-column (its columns are {', '.join(names)})")
    pair = need(files.text_pair_column, "--text-pair-column") if files.text_pair_column else (
        PAIR_COLUMNS.get(text) if PAIR_COLUMNS.get(text) in names else None)
    return text, pair, need(files.label_column or "label", "--label-column")


def _rows(path: str) -> list[dict]:
    """The file's rows as dicts, read by `datasets`' local loader for its format."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown data format {suffix or '(no extension)'!r}; use one of "
                        f"{', '.join(FORMATS)}")
    if not Path(path).is_file():
        raise DataError(f"data file {path} does not exist")
    if Path(path).stat().st_size == 0:
        raise DataError(f"{path} is empty")
    try:
        import datasets
    except ImportError:
        raise DataError("reading your own data files needs `pip install datasets`") from None
    builder, options = FORMATS[suffix]
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its loaders log a bad file before raising: one line is ours
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as cache:  # the loader's Arrow cache is not the user's to keep
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                       keep_in_memory=True, **options)
        except Exception as e:  # pandas, pyarrow and datasets each raise their own types for a bad file
            raise DataError(_unreadable(path, suffix, e)) from None
        return ds.to_list()


def _unreadable(path: str, suffix: str, error: Exception) -> str:
    # datasets wraps the parser's error in a generic DatasetGenerationError: the user needs the parser's
    cause = error
    while type(cause).__name__ == "DatasetGenerationError" and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, UnicodeDecodeError):
        return f"{path} is not UTF-8 text{_first_non_utf8(path)}: save it as UTF-8"
    if "corresponds to no data" in str(cause):
        return f"{path} has no data rows"
    text = " ".join(str(cause).split())
    return f"{path} cannot be read as {suffix[1:].upper()}: {type(cause).__name__}: {text}"[:400]


def _first_non_utf8(path: str) -> str:
    # the parser's offset counts from wherever its chunk began, so find the place in the file itself
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return f" (line {n}, byte 0x{line[e.start]:02x})"
    return ""


def load_file(path: str, files: DataFiles, task: Task) -> Split:
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path} has no data rows")
    text, pair, label = _columns(list(rows[0]), files, path)
    out, skipped, first = [], 0, ""
    for n, row in enumerate(rows, 1):
        a, b, y = row.get(text), row.get(pair) if pair else None, _label(row.get(label), task, path, n)
        if not isinstance(a, str) or (pair and not isinstance(b, str)) or y is None:
            skipped += 1
            first = first or f"row {n}: {'no label' if y is None else 'no text'}"
            continue
        out.append(Example(a, b, y))
    if not out or skipped > MAX_SKIPPED * len(rows):
        raise DataError(f"{path}: {skipped} of {len(rows)} rows have no usable text or label (first: {first})")
    return Split(out, path, len(rows), skipped, first)


def _qa_file(path: str, files: DataFiles) -> Split:
    if Path(path).suffix.lower() == ".json" and Path(path).is_file():
        try:
            return squad_split(read_squad_json(Path(path)), path)
        except DataError as e:
            if "is not a SQuAD-format file" not in str(e):
                raise  # a SQuAD file with a problem; anything else may be JSON rows, read below
    return load_qa_rows(_rows(path), path, files.text_column or "question", files.text_pair_column or "context",
                        files.label_column or "answers")


def load_user_data(files: DataFiles, config, head: Head) -> tuple:
    """(task, {"train": Split, "dev": Split}) for the given files (either may be absent)."""
    paths = {k: p for k, p in (("train", files.train), ("dev", files.dev)) if p}
    name = Path(files.train or files.dev).name
    if head is QUESTION_ANSWERING:
        splits = {k: _qa_file(p, files) for k, p in paths.items()}
        return QATask(name, any(not e.answers for s in splits.values() for e in s.examples)), splits
    task = user_task(config, name)
    splits = {k: load_file(p, files, task) for k, p in paths.items()}
    if task.is_regression and "dev" in splits and len(splits["dev"].examples) < 2:
        raise DataError(f"{files.dev} has {len(splits['dev'].examples)} usable row: Pearson and Spearman "
                        f"correlations need at least 2")
    return task, splits

"""Extractive question answering: SQuAD v1.1 / v2.0 files, overlapping windows over long
contexts, spans decoded from start/end logits, and the official EM / F1.

Windows follow the usual recipe: question + as much context as fits in max_len, the next
window starting doc_stride context tokens before the previous one ended, so every answer lies
whole in some window. A training window that does not hold its answer points both targets at
the first token (the "no answer" position). At evaluation the best span of all an example's
windows wins; for v2.0, no answer wins when the lowest first-token score of its windows beats it.
"""
from __future__ import annotations

import collections
import json
import re
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .heads import QUESTION_ANSWERING
from .spans import best_span
from .tasks import MAX_SKIPPED, DataError, Split, hub_dataset

MAX_QUESTION_TOKENS = 64  # longer questions are cut, so that some context always fits


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]  # empty: unanswerable (v2.0)
    starts: tuple[int, ...]  # character offset of each answer in the context

    @property
    def texts(self) -> tuple[str, str]:
        return self.question, self.context


@dataclass(frozen=True)
class QATask:
    """A question-answering task: SQuAD's, or the one a user's QA files define."""

    name: str
    allow_no_answer: bool  # v2.0: "no answer" is a prediction
    doc_stride: int = 128
    main_metric: str = "f1"
    head = QUESTION_ANSWERING
    num_labels = 2  # transformers' QA heads: start and end
    label_names = None
    is_regression = False
    max_len = QUESTION_ANSWERING.max_len

    def load(self, directory: Path | None, splits: tuple[str, ...] = ("train", "dev")) -> dict[str, Split]:
        return {k: v for k, v in load_squad(self, directory).items() if k in splits}

    def trivial(self, batches) -> None:
        return None  # no constant answer to compare with

    def encode(self, tokenizer, examples: Sequence[QAExample], max_len: int, inputs: Sequence[str],
               train: bool) -> list[dict]:
        return windows(tokenizer, examples, max_len, self.doc_stride, inputs, train)

    def score(self, outputs: Sequence[dict[str, np.ndarray]], batches: Sequence[dict]) -> dict[str, float]:
        """EM and F1 (fractions) over every example of the batches' windows."""
        per_example: dict[str, list] = collections.defaultdict(list)
        examples = {}
        for out, batch in zip(outputs, batches):
            for i, (ex, offsets) in enumerate(zip(batch["example"], batch["offsets"])):
                examples[ex.id] = ex
                per_example[ex.id].append((out["start_logits"][i], out["end_logits"][i], offsets))
        predictions = {k: best_span(examples[k].context, wins, self.allow_no_answer)[0]
                       for k, wins in per_example.items()}
        return squad_metrics(examples.values(), predictions)


SQUAD = {"squad": QATask("squad", False), "squad_v2": QATask("squad_v2", True)}
_FILES = {"squad": ("train-v1.1.json", "dev-v1.1.json", "rajpurkar/squad"),
          "squad_v2": ("train-v2.0.json", "dev-v2.0.json", "rajpurkar/squad_v2")}


# -- reading -------------------------------------------------------------------------------

def _list(value) -> list:
    """value if it is a list, else empty: a file's structure is never trusted."""
    return value if isinstance(value, list) else []


def _example(qa: dict, context: str, n: int, need_answer: bool) -> tuple[QAExample | None, str]:
    """One question of a SQuAD file, or (None, why not)."""
    if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or not qa["question"].strip():
        return None, f"question {n} has no question text"
    answers = qa.get("answers")
    flat = isinstance(answers, dict) and isinstance(answers.get("text"), list) and isinstance(
        answers.get("answer_start"), list)
    if flat:  # the Hub's flat layout: {"text": [...], "answer_start": [...]}
        answers = [{"text": t, "answer_start": s} for t, s in zip(answers["text"], answers["answer_start"])]
    elif answers is not None and not isinstance(answers, list):
        return None, f"question {n} has answers that are neither a list nor {{text: [...], answer_start: [...]}}"
    texts, starts = [], []
    for a in answers or []:
        if not (isinstance(a, dict) and isinstance(a.get("text"), str) and isinstance(a.get("answer_start"), int)
                and not isinstance(a["answer_start"], bool)
                and 0 <= a["answer_start"] and a["answer_start"] + len(a["text"]) <= len(context)):
            return None, f"question {n} has an answer that is not a span of its context"
        if context[a["answer_start"]:a["answer_start"] + len(a["text"])] != a["text"]:
            # training would learn whatever span the offset points at, not the answer
            found = context[a["answer_start"]:a["answer_start"] + len(a["text"])]
            return None, (f"question {n} has an answer {a['text'][:40]!r} whose answer_start "
                          f"{a['answer_start']} points at {found[:40]!r}")
        texts.append(a["text"])
        starts.append(a["answer_start"])
    if not texts and (need_answer or not qa.get("is_impossible", True)):
        return None, f"question {n} has no answer"
    return QAExample(str(qa.get("id", n)), qa["question"].strip(), context, tuple(texts), tuple(starts)), ""


def squad_split(articles: list[list[tuple[dict, str]]], source: str, need_answer: bool = False) -> Split:
    return _split(sum(articles, []), source, need_answer)


def _split(records: list[tuple[dict, str]], source: str, need_answer: bool) -> Split:
    out, skipped, first = [], 0, ""
    for n, (qa, context) in enumerate(records, 1):
        ex, why = _example(qa, context, n, need_answer)
        if ex is None:
            skipped += 1
            first = first or why
        else:
            out.append(ex)
    if not out or skipped > MAX_SKIPPED * len(records):
        raise DataError(f"{source}: {skipped} of {len(records)} questions cannot be read (first: {first}); "
                        f"is it a SQuAD-format file?")
    return Split(out, source, len(records), skipped, first)


def read_squad_json(path: Path) -> list[list[tuple[dict, str]]]:
    """A SQuAD-format file: its articles, each a list of (question record, context)."""
    try:
        data = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{path} is not a JSON file: {str(e)[:100]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path} is not a SQuAD-format file (an object whose \"data\" lists articles)")
    articles = []
    for article in data["data"]:
        records = []
        for para in _list(article.get("paragraphs")) if isinstance(article, dict) else []:
            context = para.get("context") if isinstance(para, dict) else None
            if isinstance(context, str):
                records += [(qa, context) for qa in _list(para.get("qas"))]
        articles.append(records)
    if not any(articles):
        raise DataError(f"{path} holds no questions")
    return articles


def load_squad(task: QATask, directory: Path | None) -> dict[str, Split]:
    """{"train": ..., "dev": ...} from DIR/SQuAD; with only the dev file there, its articles
    are split in two (even-numbered ones for calibration and re-finetuning, odd-numbered ones
    for evaluation), so that no question is both trained on and scored."""
    train_name, dev_name, hub = _FILES[task.name]
    need = not task.allow_no_answer
    if directory is None:
        return _from_hub(hub, need)
    folder = Path(directory) / "SQuAD"
    if not (folder / dev_name).is_file():
        raise DataError(f"missing dev data for {task.name}: {folder / dev_name} does not exist")
    dev = read_squad_json(folder / dev_name)
    if (folder / train_name).is_file():
        train = read_squad_json(folder / train_name)
        return {"train": squad_split(train, str(folder / train_name), need),
                "dev": squad_split(dev, str(folder / dev_name), need)}
    print(f"note: no {train_name} in {folder}: splitting {dev_name} by article, even-numbered articles for "
          f"calibration and re-finetuning, odd-numbered ones for evaluation", file=sys.stderr)
    return {"train": squad_split(dev[0::2], f"{folder / dev_name} (even-numbered articles)", need),
            "dev": squad_split(dev[1::2], f"{folder / dev_name} (odd-numbered articles)", need)}


def _from_hub(hub: str, need_answer: bool) -> dict[str, Split]:
    out = {}
    for split, name in (("train", "train"), ("dev", "validation")):
        rows = hub_dataset("SQuAD", f"{hub}/{name}", hub, split=name).to_list()
        out[split] = _split([(r, r["context"]) for r in rows], f"{hub} {name}", need_answer)
    return out


def load_qa_rows(rows: list[dict], source: str, question: str, context: str, answers: str) -> Split:
    """A user's QA rows (SQuAD's flat layout: question, context, answers{text, answer_start})."""
    if rows and not all(c in rows[0] for c in (question, context, answers)):
        raise DataError(f"{source} needs the columns {question!r}, {context!r} and {answers!r} "
                        f"(--text-column, --text-pair-column, --label-column); its columns are {', '.join(rows[0])}")
    # no is_impossible here: a row without answers is an unanswerable question
    records = [({"id": r.get("id", n), "question": r.get(question), "answers": r.get(answers)},
                r.get(context) if isinstance(r.get(context), str) else "") for n, r in enumerate(rows, 1)]
    return _split(records, source, need_answer=False)


# -- windows -------------------------------------------------------------------------------

def _cut_question(tokenizer, question: str) -> str:
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= MAX_QUESTION_TOKENS:
        return question
    return question[:enc["offset_mapping"][MAX_QUESTION_TOKENS - 1][1]]


def windows(tokenizer, examples: Sequence[QAExample], max_len: int, stride: int, inputs: Sequence[str],
            train: bool) -> list[dict]:
    """Each example as windows of at most max_len tokens. Training windows carry
    start/end_positions; evaluation windows carry their example and the character span of
    every context token (None elsewhere), for decoding."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("question answering needs a fast tokenizer (tokenizer.json), for character offsets")
    stride = min(stride, max_len // 2)
    questions = [_cut_question(tokenizer, e.question) for e in examples]
    enc = tokenizer(questions, [e.context for e in examples], truncation="only_second", max_length=max_len,
                    stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    keys = [k for k in inputs if k in enc]
    features = []
    for i, n in enumerate(enc["overflow_to_sample_mapping"]):
        ex, seq = examples[n], enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        feature = {k: enc[k][i] for k in keys}
        if train:
            feature["start_positions"], feature["end_positions"] = _target(ex, offsets)
        else:
            feature["example"], feature["offsets"] = ex, offsets
        features.append(feature)
    return features


def _target(ex: QAExample, offsets: list) -> tuple[int, int]:
    """Token positions of the first answer in this window, or (0, 0) when it is not inside."""
    if not ex.answers:
        return 0, 0
    start, end = ex.starts[0], ex.starts[0] + len(ex.answers[0])
    ctx = [k for k, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > start or offsets[ctx[-1]][1] < end:
        return 0, 0
    s = next(k for k in ctx if offsets[k][1] > start)
    e = next(k for k in reversed(ctx) if offsets[k][0] < end)
    return s, max(s, e)


# -- decoding and metrics ------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:  # v2.0's rule for no-answer; for v1.1 an empty prediction scores 0
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(examples, predictions: dict[str, str]) -> dict[str, float]:
    """EM and F1 as fractions, each the best over an example's gold answers, averaged over
    examples; an example without a prediction scores 0 (or 1 if it is unanswerable)."""
    exact = f1 = 0.0
    examples = list(examples)
    for ex in examples:
        golds = list(ex.answers) or [""]
        pred = predictions.get(ex.id, "")
        exact += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
        f1 += max(f1_score(pred, g) for g in golds)
    n = max(1, len(examples))
    return {"exact": exact / n, "f1": f1 / n}

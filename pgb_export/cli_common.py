"""What both command-line tools share: one-line errors (flags included), checked numeric
flags, and plain-text tables."""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence

from pruning.plan import PlanError

from pruning.modeldir import ModelError
from pruning.tasks import DataError
from pruning.userdata import DataFiles

KNOWN_ERRORS = (ModelError, DataError, PlanError)


class UsageError(ValueError):
    """A flag value or combination that cannot work."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other known error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def debug() -> bool:
    """PGB_DEBUG as a boolean: 1/true/yes/on show tracebacks; 0, false, no, off or unset don't."""
    return os.environ.get("PGB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def progress(quiet: bool) -> bool:
    """Progress bars only for a person watching: not with --quiet, and not into a log file or
    a pipe, where every redraw would be a line of noise."""
    return not quiet and sys.stderr.isatty()


def number(kind: type = float, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite int or float within [low, high] (open ends where asked)."""
    span = (("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}") + ", "
            + ("inf" if high is None else f"{high:g}") + (")" if high_open else "]"))

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r:.40}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r:.40}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text!r:.40}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def add_data_flags(p: argparse.ArgumentParser, train: bool) -> None:
    """Users' own labelled data instead of a GLUE --task (CSV, TSV, JSON, JSONL, Parquet)."""
    g = p.add_argument_group("your own data (instead of --task; labels as the model's config names them; a "
                             "question-answering model takes SQuAD-format JSON, or question/context/answers rows)")
    if train:
        g.add_argument("--train-file", metavar="F", help="training rows: importance, compensation, re-finetuning")
    g.add_argument("--dev-file", metavar="F", help="evaluation rows: the dev metric" + ("" if train else " parity"))
    g.add_argument("--text-column", metavar="C", help="text column (default: the first of text, sentence, "
                                                       "sentence1, question, review, content; QA: question)")
    g.add_argument("--text-pair-column", metavar="C", help="second text of a pair (default: sentence2 beside "
                                                            "sentence1, question2 beside question1; QA: context)")
    g.add_argument("--label-column", metavar="C", help="label column (default: label; QA: answers)")


def data_files(args) -> DataFiles | None:
    """The user's data files, or None for a GLUE --task; rejects mixing the two."""
    train = getattr(args, "train_file", None)
    given = [f for f in ("train_file", "dev_file") if getattr(args, f, None)]
    if args.task and given:
        raise UsageError(f"--task reads GLUE data; --{given[0].replace('_', '-')} is for your own: give one or the other")
    if not given:
        return None
    if hasattr(args, "train_file") and not (train and args.dev_file):
        raise UsageError("your own data needs both --train-file and --dev-file")
    return DataFiles(train, args.dev_file, args.text_column, args.text_pair_column, args.label_column)


def run(prog: str, main: Callable[[], int], extra_errors: tuple = ()) -> int:
    """Call main(); a known error becomes one line on stderr and exit code 2.
    PGB_DEBUG=1 shows the traceback instead."""
    try:
        return main()
    except (UsageError, *KNOWN_ERRORS, *extra_errors) as e:
        if debug():
            raise
        print(f"{prog}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])

"""What both command-line tools share: clean one-line errors and plain-text tables."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from pruning.plan import PlanError

from .modeldir import ModelError
from .tasks import DataError

KNOWN_ERRORS = (ModelError, DataError, PlanError)


class UsageError(ValueError):
    """A flag value or combination that cannot work."""


def run(prog: str, main: Callable[[], int], extra_errors: tuple = ()) -> int:
    """Call main(); a known error becomes one line on stderr and exit code 2.
    PGB_DEBUG=1 shows the traceback instead."""
    try:
        return main()
    except (UsageError, *KNOWN_ERRORS, *extra_errors) as e:
        if os.environ.get("PGB_DEBUG"):
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])

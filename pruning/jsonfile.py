"""JSON files we read from users and write for them: read strictly, written atomically and
always as valid JSON."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def read_object(path: str | os.PathLike, error: type[Exception], what: str) -> dict:
    """The JSON object in `path`; anything else (unreadable, not UTF-8, not JSON, nested
    beyond the parser's depth, not an object) raises `error` with one line saying which."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise error(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to be a {what}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} holds a JSON {type(data).__name__}, not an object")
    return data


def _finite(value):
    """NaN and infinities become null: json.dumps would write them as bare NaN, which no
    JSON parser reads back."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_atomic(path: str | os.PathLike, data, indent: int | None = 1) -> None:
    """Write `data` as JSON through a temporary file and one rename, so that a reader (or a
    crash) never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(data), f, indent=indent, allow_nan=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

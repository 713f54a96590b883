"""README.md model cards for the two output directories: the Hub metadata a Hugging Face user
expects (pipeline_tag, base model, tags), what PGB did, and the measured metrics."""
from __future__ import annotations

import re
from pathlib import Path


def _hub_id(source: str) -> str | None:
    """`source` when it reads as a Hub model id (owner/name), else None: a local path is not
    a base model anyone else can resolve."""
    return source if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source) and not Path(source).exists() else None


def card(title: str, source: str, pipeline_tag: str, library: str, facts: dict, metrics: dict | None,
         usage: str) -> str:
    """facts: setting -> value rows; metrics: stage -> {metric: value}."""
    head = ["---", f"pipeline_tag: {pipeline_tag}", f"library_name: {library}",
            "tags:", "- pgb", "- pruned", "- bert"]
    base = _hub_id(source)
    if base:
        head.append(f"base_model: {base}")
    lines = head + ["---", "", f"# {title}", "", f"Made from `{source}` by pgb-export "
                    "(PGB: Permutation and Grouping for BERT, one-shot semi-structured pruning).", "",
                    "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    if metrics:
        names = sorted({m for stage in metrics.values() for m in stage})
        lines += ["", "| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {stage} | " + " | ".join(_fmt(values.get(n)) for n in names) + " |"
                  for stage, values in metrics.items()]
    return "\n".join(lines + ["", "## Use", "", usage, ""])


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

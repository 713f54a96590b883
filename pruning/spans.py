"""Answer spans from start/end logits, over all windows of one example: the decoding the SQuAD
metric uses (pruning.squad) and the Triton question-answering model serves with. numpy only,
so that the Triton python backend can load this file as it is.
"""
from __future__ import annotations

import numpy as np

N_BEST = 20  # start and end candidates tried per window
MAX_ANSWER_TOKENS = 30


def best_span(context: str, windows: list, allow_no_answer: bool) -> tuple[str, float]:
    """(answer, score): the highest start + end logit over all windows (start_logits,
    end_logits, offsets) of one example, end not before start, at most MAX_ANSWER_TOKENS long,
    inside the context (offsets: the character span of each context token, None elsewhere).
    ("", -inf) when there is none; with allow_no_answer, ("", its score) when the lowest
    first-token score of the windows is higher."""
    best, best_text, null = -np.inf, "", np.inf
    for start, end, offsets in windows:
        start, end = np.asarray(start)[:len(offsets)], np.asarray(end)[:len(offsets)]
        null = min(null, float(start[0] + end[0]))
        for s in np.argsort(start)[::-1][:N_BEST]:
            if offsets[s] is None:
                continue
            for e in np.argsort(end)[::-1][:N_BEST]:
                if offsets[e] is None or e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                    continue
                score = float(start[s] + end[e])
                if score > best:
                    best, best_text = score, context[offsets[s][0]:offsets[e][1]]
    if allow_no_answer and null > best:
        return "", null
    return best_text, best

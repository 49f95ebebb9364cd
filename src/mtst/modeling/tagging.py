"""Token tagging (e.g. named entities): words, BIO tags, sub-token alignment, entity spans.

Tagged data is word-level: each row is a list of words with one tag per
word. The model sees sub-tokens, so a word's tag sits on its first sub-token
and the rest are ignored (``-100``); predictions are read back from the same
positions. Raw text is split into words by :func:`split_words`, the same rule
the bundled tagged demo was written with, so training and prediction agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from mtst.constants import IGNORE_INDEX

# A word: letters/digits with inner . , ' - / & (prices, model numbers, "Wi-Fi"), an optional
# currency sign before and % after; any other non-space character stands alone. Combining marks belong
# to the character before them: "café" typed as "cafe" + U+0301 is one word, as its composed form is.
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\u0483-\u0489\u0591-\u05bd"
_PART = rf"\w[\w{_MARKS}]*"
_WORD = re.compile(rf"[$€£¥]?{_PART}(?:[.,'’\-/&]{_PART})*%?|\S[{_MARKS}]*")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words of raw text with their character offsets: ``(word, start, end)``."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def align_tags(word_ids: Sequence[int | None], word_tags: np.ndarray) -> np.ndarray:
    """Sub-token labels: the word's tag on its first sub-token, ``-100`` elsewhere."""
    out = np.full(len(word_ids), IGNORE_INDEX, dtype=np.int64)
    previous: int | None = None
    for pos, word in enumerate(word_ids):
        if word is not None and word != previous and word < len(word_tags):
            out[pos] = word_tags[word]
        previous = word
    return out


def first_subtokens(word_ids: Sequence[int | None]) -> list[int]:
    """Position of each word's first sub-token (words cut by truncation are absent)."""
    positions: list[int] = []
    previous: int | None = None
    for pos, word in enumerate(word_ids):
        if word is not None and word != previous:
            positions.append(pos)
        previous = word
    return positions


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, first word, last word + 1)`` for each entity in a BIO/IOB tag sequence.

    Follows seqeval's default (CoNLL) reading: an ``I-`` that does not continue
    an entity of its type starts a new one.
    """
    spans: list[tuple[str, int, int]] = []
    kind: str | None = None
    start = 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        if kind is not None and (prefix in ("B", "O", "S") or tag == "O" or t != kind):
            spans.append((kind, start, i))
            kind = None
        if tag != "O" and prefix in ("B", "I", "S") and kind is None:
            kind, start = t, i
            if prefix == "S":
                spans.append((kind, start, i + 1))
                kind = None
    return spans


def tagging_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level precision/recall/F1 (seqeval, CoNLL rules) and word-level tag accuracy."""
    from seqeval.metrics import classification_report

    words = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True))
    report = classification_report([list(g) for g in gold], [list(p) for p in pred], output_dict=True, zero_division=0)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_class = {
        kind: {
            "precision": float(m["precision"]),
            "recall": float(m["recall"]),
            "f1": float(m["f1-score"]),
            "support": int(m["support"]),
        }
        for kind, m in report.items()
        if not kind.endswith(" avg")
    }
    return {
        "n": len(gold),
        "words": words,
        "accuracy": correct / max(1, words),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "per_class": per_class,
    }

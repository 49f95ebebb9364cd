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
from pathlib import Path
from typing import Any

import numpy as np

from mtst.constants import IGNORE_INDEX
from mtst.errors import DataError

CONLL_SUFFIXES = (".conll", ".conllu", ".bio", ".iob", ".iob2")

# A word: letters/digits with inner . , ' - / & (prices, model numbers, "Wi-Fi"), an optional
# currency sign before and % after; any other non-space character stands alone.
_WORD = re.compile(r"[$€£¥]?\w+(?:[.,'’\-/&]\w+)*%?|\S")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words of raw text with their character offsets: ``(word, start, end)``."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def read_conll(path: str | Path) -> list[dict[str, Any]]:
    """CoNLL-style file: one ``word ... tag`` line per word, a blank line between sentences.

    The first column is the word and the last the tag; ``-DOCSTART-`` lines are
    skipped. Rows come back as ``{"tokens": [...], "tags": [...]}``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read as UTF-8 text ({exc})") from exc
    rows: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate([*text.splitlines(), ""], start=1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                rows.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        if len(parts) < 2:
            raise DataError(f"{p}, line {lineno}: expected 'word ... tag', got {line.strip()!r}")
        tokens.append(parts[0])
        tags.append(parts[-1])
    if not rows:
        raise DataError(f"{p}: no tagged sentences found")
    return rows


def check_tagged_row(words: Any, tags: Any, where: str) -> tuple[list[str], list[str]]:
    """Words and tags must be equally long lists of non-empty strings."""
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise DataError(f"{where}: tokens must be a non-empty list of words")
    if not isinstance(tags, list) or len(tags) != len(words):
        got = len(tags) if isinstance(tags, list) else type(tags).__name__
        raise DataError(f"{where}: {len(words)} tokens but {got} tags; each word needs one tag")
    return [w.strip() for w in words], [str(t).strip() for t in tags]


def bio_labels(tags: set[str]) -> list[str]:
    """Tag set in a stable order: ``O`` first, then by entity type with ``B-`` before ``I-``."""

    def key(tag: str) -> tuple[int, str, str]:
        if tag == "O":
            return (0, "", "")
        prefix, _, kind = tag.partition("-")
        return (1, kind or prefix, prefix if kind else "")

    return sorted(tags, key=key)


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

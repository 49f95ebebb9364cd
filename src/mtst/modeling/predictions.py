"""Prediction records from probabilities, shared by every backend (torch, ONNX) and the server.

One place decides what a prediction looks like, so ``mtst predict``, the
ONNX predictor and ``POST /predict`` return the same records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mtst.modeling.tagging import entity_spans, first_subtokens


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numerically stable)."""
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def sentence_record(labels: Sequence[str], probs: np.ndarray) -> dict[str, Any]:
    """``{"label", "probabilities"}`` of one text for one sentence task."""
    return {
        "label": labels[int(np.argmax(probs))],
        "probabilities": {lab: round(float(x), 6) for lab, x in zip(labels, probs, strict=True)},
    }


def token_record(
    text: str,
    words: Sequence[tuple[str, int, int]],
    word_ids: Sequence[int | None],
    probs: np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    """``{"entities", "words", "tags"}`` of one text for one token task.

    ``words`` are ``(word, start, end)`` from ``tagging.split_words``,
    ``word_ids`` maps each sub-token to its word, and ``probs`` has one row per
    sub-token. A word takes the tag of its first sub-token; entities carry
    character offsets into ``text`` and the mean probability of their tags.
    """
    positions = first_subtokens(word_ids)
    p = probs[positions] if positions else np.zeros((0, len(labels)))
    tags = [labels[int(j)] for j in p.argmax(-1)]
    entities = []
    for kind, a, b in entity_spans(tags):
        start, end = words[a][1], words[b - 1][2]
        score = float(p[np.arange(a, b), p[a:b].argmax(-1)].mean())
        entities.append({"type": kind, "text": text[start:end], "start": start, "end": end, "score": round(score, 6)})
    return {"entities": entities, "words": [w for w, _, _ in words[: len(tags)]], "tags": tags}

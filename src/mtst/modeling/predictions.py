"""One inference path: every backend (torch, ONNX) and the server predict through here.

A backend is a :class:`Predictor`: it turns texts into :class:`Outputs` (the
sentence embeddings and every asked task's probabilities from ONE forward
pass, sentence and token tasks together). :func:`check_tasks` is the one
unknown-task check and :func:`records` the one place that decides what a
prediction looks like, so ``mtst predict``, the ONNX predictor and
``POST /predict`` return the same records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mtst.errors import ModelLoadError
from mtst.modeling import tasktypes
from mtst.modeling.tagging import entity_spans, first_subtokens, split_words
from mtst.texts import as_names, as_texts


class UnknownTaskError(ModelLoadError):
    """A task was asked for that the model does not predict (a ModelLoadError, as it always was)."""


@dataclass
class Outputs:
    """One forward pass over texts: pooled embeddings (not normalised) and per-task probabilities.

    Sentence tasks hold an ``(n, labels)`` array; token tasks a list of
    ``(sub-tokens, labels)`` arrays, with ``word_ids`` (sub-token -> word) and
    ``words`` (``(word, start, end)`` per text) to map them back to the text.
    """

    embeddings: np.ndarray
    probs: dict[str, Any]
    word_ids: list[list[int | None]] | None = None
    words: list[list[tuple[str, int, int]]] | None = None

    def rows(self, start: int, stop: int) -> Outputs:
        """The outputs of texts ``start:stop`` (a request's share of a shared batch)."""
        return Outputs(
            self.embeddings[start:stop],
            {t: p[start:stop] for t, p in self.probs.items()},
            None if self.word_ids is None else self.word_ids[start:stop],
            None if self.words is None else self.words[start:stop],
        )


class Predictor(Protocol):
    """What the CLI, the server and :func:`predict` need of a backend."""

    def task_specs(self) -> Mapping[str, Any]:
        """Prediction tasks -> their spec (``type`` and ``labels``), in the model's order."""
        ...

    def outputs(
        self,
        texts: Sequence[str],
        tasks: Sequence[str],
        batch_size: int = 32,
        max_padding: float | None = None,
        pairs: Sequence[str] | None = None,
    ) -> Outputs: ...


def spec_value(spec: Any, key: str) -> Any:
    """A field of a task spec, whether a HeadSpec (torch) or a dict (an ONNX export's metadata)."""
    return spec[key] if isinstance(spec, Mapping) else getattr(spec, key)


def check_tasks(specs: Mapping[str, Any], asked: Sequence[str] | None) -> list[str]:
    """The tasks to predict (default: all); unknown names fail naming what the model predicts."""
    names = list(specs) if asked is None else list(asked)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise UnknownTaskError(f"unknown task(s) {', '.join(unknown)}; this model predicts: {', '.join(specs)}")
    return names


def is_pair_task(spec: Any) -> bool:
    return spec_value(spec, "type") in tasktypes.PAIR_TYPES


def input_tasks(specs: Mapping[str, Any], asked: Sequence[str] | None, pairs: bool) -> list[str]:
    """The tasks to predict for single texts or for pairs (default: every task of that input); a pair
    task asked of single texts, or a single-text task asked of pairs, fails naming the input it needs."""
    names = check_tasks(specs, asked)
    if asked is None:
        names = [n for n in names if is_pair_task(specs[n]) == pairs]
        if not names:
            kind = "pair" if pairs else "single-text"
            raise UnknownTaskError(f"this model has no {kind} task; its tasks: {', '.join(specs)}")
        return names
    wrong = [n for n in names if is_pair_task(specs[n]) != pairs]
    if wrong:
        need = "single texts, not pairs" if pairs else "pairs of texts (mtst predict --pairs, or pairs in a request)"
        raise UnknownTaskError(f"task(s) {', '.join(wrong)} read {need}")
    return names


def needs_words(specs: Mapping[str, Any], names: Sequence[str]) -> bool:
    return any(spec_value(specs[n], "type") == "token_classification" for n in names)


def text_words(texts: Sequence[str]) -> list[list[tuple[str, int, int]]]:
    """Words with character offsets per text (token tasks tag words, and report spans in the text)."""
    return [split_words(t) for t in texts]


def records(texts: Sequence[str], specs: Mapping[str, Any], out: Outputs, names: Sequence[str]) -> list[dict]:
    """One dict per text: ``{"label", "probabilities"}`` per classification task (``{"labels",
    "probabilities"}`` multi-label, ``{"value"}`` regression), entity spans per token task."""
    rows: list[dict] = [{} for _ in texts]
    for task in names:
        labels = spec_value(specs[task], "labels")
        token = spec_value(specs[task], "type") == "token_classification"
        for i, probs in enumerate(out.probs[task]):
            if token:
                assert out.word_ids is not None and out.words is not None
                rows[i][task] = token_record(texts[i], out.words[i], out.word_ids[i], probs, labels)
            else:
                rows[i][task] = tasktypes.record(specs[task], probs)
    return rows


def predict(
    predictor: Predictor,
    texts: str | Sequence[str],
    tasks: str | Sequence[str] | None = None,
    batch_size: int = 32,
    pairs: str | Sequence[str] | None = None,
) -> list[dict] | dict:
    """Records of ``texts`` for ``tasks`` (default: every single-text task; with ``pairs``, the second
    texts, every pair task) from one forward pass of ``predictor``; one string gives one record.
    The inputs are checked here, the Python API's boundary (:func:`mtst.texts.as_texts`)."""
    items, single = as_texts(texts)
    second = None
    if pairs is not None:
        second, pair_single = as_texts(pairs, "pairs")
        if pair_single != single:
            raise TypeError("texts and pairs: give both as one string, or both as lists of the same length")
    specs = predictor.task_specs()
    names = input_tasks(specs, as_names(tasks), second is not None)
    if second is not None and len(second) != len(items):
        raise ValueError(f"{len(items)} first texts but {len(second)} second ones")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a whole number of at least 1, got {batch_size!r}")
    out = records(items, specs, predictor.outputs(items, names, batch_size, pairs=second), names) if items else []
    return out[0] if single else out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numerically stable)."""
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


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

"""Metrics: classification scores per task and rank correlation for similarity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mtst.data import Split
    from mtst.model import MultiTaskModel


def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman needs."""
    arr = np.asarray(values, dtype=np.float64)
    order = np.argsort(arr, kind="mergesort")
    ranks = np.empty(len(arr), dtype=np.float64)
    ranks[order] = np.arange(1, len(arr) + 1)
    uniq, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    if len(uniq) < len(arr):
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation."""
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom else 0.0


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Macro-F1 averages over the classes present in ``y_true`` or ``y_pred``
    (as scikit-learn does with its default ``labels``), so a class absent from
    a small split does not count as a zero.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    actual = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = (actual + predicted) > 0
    return {
        "n": len(y_true),
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion": confusion.tolist(),
        "labels": list(labels),
    }


def summary_metrics(per_task: dict[str, dict]) -> dict[str, float]:
    """Flat ``task/metric`` scores plus their means across tasks (for model selection)."""
    flat: dict[str, float] = {}
    for task, m in per_task.items():
        flat[f"{task}/accuracy"] = m["accuracy"]
        flat[f"{task}/macro_f1"] = m["macro_f1"]
    if per_task:
        flat["mean_accuracy"] = float(np.mean([m["accuracy"] for m in per_task.values()]))
        flat["mean_macro_f1"] = float(np.mean([m["macro_f1"] for m in per_task.values()]))
    return flat


def score_split(split: Split, predictions: dict[str, np.ndarray], labels: dict[str, list[str]]) -> dict[str, Any]:
    """Per-task metrics from predicted class indices, each task on its own labelled rows."""
    out = {}
    for task, pred in predictions.items():
        rows = split.rows_for(task)
        if len(rows):
            out[task] = classification_metrics(split.labels[task][rows], np.asarray(pred)[rows], labels[task])
    return out


def evaluate_split(
    model: MultiTaskModel, split: Split, ids: Sequence[Sequence[int]], batch_size: int = 64
) -> dict[str, Any]:
    """Per-task metrics of a model on a tokenised split."""
    tasks = [t for t in model.tasks if t in split.labels and len(split.rows_for(t))]
    probs = model.predict_proba_ids(ids, tasks=tasks, batch_size=batch_size)
    predictions = {task: np.asarray(probs[task]).argmax(-1) for task in tasks}
    return score_split(split, predictions, {t: spec.labels for t, spec in model.tasks.items()})


def evaluate_file(model: MultiTaskModel, path: str | Path, text_column: str = "text") -> dict[str, dict]:
    """Score a saved model on a labelled file: every task whose label column the file has."""
    from mtst.data import Split, check_texts, column, encode_labels, label_values, load_table
    from mtst.errors import DataError

    rows = load_table(path)
    texts = check_texts(column(rows, text_column, path), path)
    labels: dict[str, np.ndarray] = {}
    for task, spec in model.tasks.items():
        col = spec.label_column or task
        if col in rows[0]:
            labels[task] = encode_labels(label_values(rows, col), spec.labels, f"{path}: task {task!r}", "the model")
    if not labels:
        wanted = ", ".join(f"{t} (column {s.label_column or t!r})" for t, s in model.tasks.items())
        raise DataError(f"{path}: no label column for any task of this model; expected one of: {wanted}")
    split = Split("eval", texts, labels)
    return evaluate_split(model, split, model.encoder.tokenize_ids(texts))

"""Metrics: classification scores per task and rank correlation for similarity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtst.modeling import tasktypes

if TYPE_CHECKING:
    from mtst.data import Split
    from mtst.modeling.model import MultiTaskModel, RowFeatures


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


def multi_label_metrics(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Micro- and macro-F1, subset accuracy (the whole set right), and precision/recall/F1/support per label.

    Macro-F1 averages over the labels that occur in the truth or the predictions, as for classification.
    """
    truth = np.asarray(truth).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    tp = (truth & predicted).sum(0).astype(np.float64)
    fp = (~truth & predicted).sum(0).astype(np.float64)
    fn = (truth & ~predicted).sum(0).astype(np.float64)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    present = (tp + fp + fn) > 0
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    return {
        "n": len(truth),
        "accuracy": float((truth == predicted).all(1).mean()) if len(truth) else 0.0,
        "micro_f1": float(2 * tp.sum() / micro_den) if micro_den else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_label": {
            name: {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(truth[:, j].sum()),
            }
            for j, name in enumerate(labels)
        },
        "labels": list(labels),
    }


def regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Pearson, Spearman, MAE and RMSE of predicted values."""
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    err = predicted - truth
    pearson = 0.0
    if len(truth) > 1 and truth.std() > 0 and predicted.std() > 0:
        pearson = float(np.corrcoef(truth, predicted)[0, 1])
    return {
        "n": len(truth),
        "pearson": pearson,
        "spearman": spearman(truth, predicted) if len(truth) > 1 else 0.0,
        "mae": float(np.abs(err).mean()) if len(truth) else 0.0,
        "rmse": float(np.sqrt((err**2).mean())) if len(truth) else 0.0,
    }


def primary_f1(metrics: dict) -> float:
    """A task's primary score: macro-F1 of a classification or multi-label task, entity F1 of a tagging
    task, Spearman of a regression task."""
    for key in ("macro_f1", "f1", "spearman"):
        if key in metrics:
            return metrics[key]
    raise KeyError(f"no primary score among {sorted(metrics)}")


def headline(metrics: dict) -> float:
    """A task's accuracy, or its primary score where it has none (regression, pair similarity)."""
    return metrics["accuracy"] if "accuracy" in metrics else primary_f1(metrics)


def summary_metrics(per_task: dict[str, dict], auxiliary: Sequence[str] = ()) -> dict[str, float]:
    """Flat ``task/metric`` scores plus their means over the main tasks (for model selection).

    ``mean_macro_f1`` averages each task's primary score (:func:`primary_f1`: macro-F1, entity F1 for
    tagging tasks, Spearman for regression); ``mean_accuracy`` averages the accuracies (subset accuracy
    of multi-label tasks; regression tasks have none). Auxiliary tasks are reported but left out of the means.
    """
    flat: dict[str, float] = {}
    for task, m in per_task.items():
        for key in ("accuracy", "macro_f1", "micro_f1", "f1", "precision", "recall", "spearman", "pearson", "mae"):
            if key in m:
                flat[f"{task}/{key}"] = m[key]
    main = [m for t, m in per_task.items() if t not in auxiliary]
    if main:
        accuracies = [m["accuracy"] for m in main if "accuracy" in m]
        if accuracies:
            flat["mean_accuracy"] = float(np.mean(accuracies))
        flat["mean_macro_f1"] = float(np.mean([primary_f1(m) for m in main]))
    return flat


def score_split(
    split: Split,
    predictions: dict[str, Any],
    labels: dict[str, list[str]],
    word_ids: Sequence[Sequence[int | None]] | None = None,
    kinds: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Per-task metrics, each task on its own labelled rows.

    Sentence tasks take predicted class indices; tagging tasks take per-token
    class indices (one array per row), read at each word's first sub-token.
    """
    from mtst.modeling.tagging import first_subtokens, tagging_metrics

    kinds = kinds or {}
    out = {}
    for task, pred in predictions.items():
        rows = split.rows_for(task)
        if not len(rows):
            continue
        if task in split.targets:
            gold, guess = split.targets[task][rows], np.asarray(pred)[rows]
            if gold.ndim == 2:
                out[task] = multi_label_metrics(gold, guess, labels[task])
            elif kinds.get(task) == "pair_similarity":  # a cosine against scores: only their order and line count
                m = regression_metrics(gold, guess)
                out[task] = {k: m[k] for k in ("n", "spearman", "pearson")}
            else:
                out[task] = regression_metrics(gold, guess)
            continue
        if task not in split.tags:
            out[task] = classification_metrics(split.labels[task][rows], np.asarray(pred)[rows], labels[task])
            continue
        names = labels[task]
        gold, guess = [], []
        for row in rows:
            tags = [names[i] for i in split.tags[task][row]]
            positions = first_subtokens(word_ids[row]) if word_ids is not None else []
            predicted = [names[int(pred[row][pos])] for pos in positions][: len(tags)]
            gold.append(tags)
            guess.append(predicted + ["O"] * (len(tags) - len(predicted)))  # words cut by max_length
        out[task] = tagging_metrics(gold, guess)
    return out


def evaluate_split(
    model: MultiTaskModel,
    split: Split,
    ids: Sequence[Sequence[int]],
    batch_size: int = 64,
    word_ids: Sequence[Sequence[int | None]] | None = None,
    rank: int = 0,
    world: int = 1,
    features: RowFeatures | None = None,
    pair_ids: Sequence[Sequence[int] | None] | None = None,
) -> dict[str, Any]:
    """Per-task metrics of a model on a tokenised split (``pair_ids``: its rows' second texts, tokenised
    here where the split has pairs and none are given).

    With several processes (``world`` > 1) each predicts every ``world``-th row
    and the shares are gathered, so all ranks return the whole split's scores.
    ``features`` (one process only) gives the encoder's output for row indices
    from a cache; see :meth:`MultiTaskModel.outputs_ids`.
    """
    if pair_ids is None and split.second is not None:
        pair_ids = tokenize_pairs(model, split)
    if world == 1:
        predictions = predict_split(model, split, ids, batch_size, features, pair_ids)
    else:
        import torch.distributed

        mine = list(range(rank, len(ids), world))
        mine_pairs = None if pair_ids is None else [pair_ids[i] for i in mine]
        local = predict_split(model, split, [ids[i] for i in mine], batch_size, None, mine_pairs)
        shares: list[Any] = [None] * world
        torch.distributed.all_gather_object(shares, (mine, local))  # in-memory exchange between our own ranks
        predictions = {t: [None] * len(ids) for t in local}
        for rows, part in shares:
            for task, values in part.items():
                for row, value in zip(rows, values, strict=True):
                    predictions[task][row] = value
    kinds = {t: spec.type for t, spec in model.tasks.items()}
    return score_split(split, predictions, {t: spec.labels for t, spec in model.tasks.items()}, word_ids, kinds)


def predict_split(
    model: MultiTaskModel,
    split: Split,
    ids: Sequence[Sequence[int]],
    batch_size: int = 64,
    features: RowFeatures | None = None,
    pair_ids: Sequence[Sequence[int] | None] | None = None,
) -> dict[str, list[Any]]:
    """Predicted class per row (sentence tasks) or per sub-token (token tasks), for the tasks the split labels
    (pair tasks where ``pair_ids`` gives the rows' second texts)."""
    tasks = [t for t in model.prediction_tasks if t in split.labels and len(split.rows_for(t))]
    if pair_ids is None:
        tasks = [t for t in tasks if model.tasks[t].type not in tasktypes.PAIR_TYPES]
    probs = model.predict_proba_ids(ids, tasks=tasks, batch_size=batch_size, features=features, pair_ids=pair_ids)
    predictions: dict[str, list[Any]] = {}
    for task in tasks:
        if model.tasks[task].type in tasktypes.SCORED_TYPES:
            predictions[task] = list(tasktypes.decide(model.tasks[task], np.asarray(probs[task])))
        else:
            predictions[task] = [None if p is None else p.argmax(-1) for p in probs[task]]
    return predictions


def model_sources(model: MultiTaskModel, tasks: Sequence[str]) -> dict[str, Any]:
    """Where a trained model's ``tasks`` find their labels in a file (a :class:`~mtst.data.TaskSource` each)."""
    from mtst.data import TaskSource

    return {
        task: TaskSource(
            model.tasks[task].label_column or task,
            model.tasks[task].labels,
            None,
            model.tasks[task].type,
            "tags" if model.tasks[task].type == "token_classification" else None,
            delimiter=model.tasks[task].label_delimiter or ",",
            empty_cell=model.tasks[task].empty_cell or "auto",
            columns=tuple(model.tasks[task].label_columns) if model.tasks[task].label_columns else None,
            pair=tuple(model.tasks[task].text_columns) if model.tasks[task].text_columns else None,
        )
        for task in tasks
    }


def evaluate_file(model: MultiTaskModel, path: str | Path, text_column: str = "text") -> dict[str, dict]:
    """Score a saved model on a labelled file: every task whose label column the file has."""
    from mtst.data import labelled_split

    sources = model_sources(model, model.prediction_tasks)
    split = labelled_split(path, sources, {t: model.tasks[t].labels for t in sources}, text_column)
    ids, word_ids = tokenize_split(model, split)
    return evaluate_split(model, split, ids, word_ids=word_ids)


StsPairs = tuple[list[str], list[str], np.ndarray]


def read_sts(path: str | Path, option: str = "--sts") -> StsPairs:
    """Sentence pairs with a similarity score (columns sentence1, sentence2, and score, label or similarity)."""
    from mtst.data import column, load_table
    from mtst.errors import ConfigError, DataError

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{option} {path}: no such file")
    rows = load_table(path)
    score_col = next((c for c in ("score", "label", "similarity") if c in rows[0]), None)
    if score_col is None:
        raise ConfigError(
            f"{option} {path}: needs a score column (score, label or similarity); has {', '.join(rows[0])}"
        )
    a = [str(x) for x in column(rows, "sentence1", path)]
    b = [str(x) for x in column(rows, "sentence2", path)]
    scores = []
    for i, r in enumerate(rows, start=1):
        try:
            scores.append(float(r[score_col]))
        except (TypeError, ValueError):
            raise DataError(f"{path}, row {i}: {score_col} {r.get(score_col)!r} is not a number") from None
    return a, b, np.asarray(scores)


def sts_spearman(encoder: Any, pairs: StsPairs, batch_size: int = 64) -> float:
    """Spearman of the cosine of each pair's embeddings against its score (STS-B's measure)."""
    a, b, gold = pairs
    ea = encoder.encode(a, normalize=True, convert_to="torch", batch_size=batch_size)
    eb = encoder.encode(b, normalize=True, convert_to="torch", batch_size=batch_size)
    return spearman((ea * eb).sum(-1).numpy(), gold)


def tokenize_pairs(model: MultiTaskModel, split: Split) -> list[list[int] | None] | None:
    """Token ids of a split's second texts (None on rows without one; None for a split without pairs)."""
    if split.second is None:
        return None
    rows = [i for i, s in enumerate(split.second) if s is not None]
    ids = model.encoder.tokenize_ids([split.second[i] for i in rows])
    out: list[list[int] | None] = [None] * len(split.second)
    for i, row_ids in zip(rows, ids, strict=True):
        out[i] = row_ids
    return out


def tokenize_split(model: MultiTaskModel, split: Split) -> tuple[list[list[int]], list[list[int | None]] | None]:
    """Token ids of a split (from its words where rows have them) and, when needed, word ids."""
    encoder = model.encoder
    if split.words is None and all(spec.type in tasktypes.SCORED_TYPES for spec in model.tasks.values()):
        return encoder.tokenize_ids(split.texts), None
    return encoder.tokenize_words(split.texts, split.words)

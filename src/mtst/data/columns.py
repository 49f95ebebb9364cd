"""A task's column of one file, read as its type reads it: labels, label sets, tags or numbers, every
cell checked and any error naming its row and column; and the label names a task's training rows give."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mtst.data.files import bio_labels, check_tagged_row
from mtst.data.labelsets import check_one_kind, empty_is_none, is_empty, label_set, label_value, one_hot_set
from mtst.data.sources import TaskSource
from mtst.data.splits import MISSING
from mtst.errors import DataError

# Regression targets are trained in float32, squared by the loss: beyond this the loss overflows.
TARGET_LIMIT = 1e15


def encode_labels(values: Sequence[str | None], names: Sequence[str], where: str, known_from: str) -> np.ndarray:
    """Label strings -> indices (``MISSING`` for None); an unknown label is an error naming it."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({v for v in values if v is not None and v not in index})
    if unknown:
        raise DataError(
            f"{where} has label(s) {', '.join(map(repr, unknown[:5]))} that {known_from} never had; "
            f"known labels: {', '.join(names)}"
        )
    return np.array([MISSING if v is None else index[v] for v in values], dtype=np.int64)


def label_values(rows: Sequence[dict[str, Any]], col: str, where: str = "") -> list[str | None]:
    """A label column as normalised strings (None where missing); a cell that is not a label names its row."""
    return [
        label_value(r.get(col), f"{where or 'a label column'}, row {i}, column {col!r}") for i, r in enumerate(rows, 1)
    ]


def sorted_labels(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def columns_of(rows: Sequence[dict[str, Any]]) -> set[str]:
    """Every key of any row: JSON Lines rows of a mixed file name only the columns they carry."""
    return set().union(*(r.keys() for r in rows))


def task_column(src: TaskSource, columns: set[str]) -> str | None:
    if src.columns:  # one column per label: the task is in a file that has every one of them
        return src.columns[0] if set(src.columns) <= columns else None
    for col in (src.column, src.fallback_column):
        if col and col in columns:
            return col
    return None


def _row_tags(
    rows: list[dict[str, Any]], col: str, words: list[list[str] | None], tokens_column: str, where: str
) -> list[list[str] | None]:
    out: list[list[str] | None] = []
    for i, (row, row_words) in enumerate(zip(rows, words, strict=True), start=1):
        value = row.get(col)
        if value is None or (isinstance(value, float) and value != value):
            out.append(None)
            continue
        if row_words is None:
            raise DataError(f"{where}, row {i}: tags need a list of words in column {tokens_column!r}")
        out.append(check_tagged_row(row_words, value, f"{where}, row {i}")[1])
    return out


def task_values(
    rows: list[dict[str, Any]],
    col: str,
    src: TaskSource,
    words: list[list[str] | None],
    tokens_column: str,
    where: str,
    alone: bool = False,
) -> list[Any]:
    """A task's column of one file, per row, as its type reads it (None: the row has no label for it).
    ``alone``: no other task has a label column in this file (an empty multi-label cell then reads as no
    labels under ``empty_cell: auto``)."""
    if src.kind == "token_classification":
        return _row_tags(rows, col, words, tokens_column, where)
    if src.kind == "multi_label":
        empty, whole = empty_is_none(src, alone), frozenset(src.labels or ())
        if src.columns:
            return [one_hot_set(r, src.columns, f"{where}, row {i}", empty) for i, r in enumerate(rows, 1)]
        sets = [
            label_set(r.get(col), src.delimiter, f"{where}, row {i}, column {col!r}", empty, whole)
            for i, r in enumerate(rows, 1)
        ]
        check_one_kind([r.get(col) for r in rows], f"{where}, column {col!r}")  # each cell read, then the column
        return sets
    if src.kind in ("regression", "pair_similarity"):
        return [_number(r.get(col), f"{where}, row {i}, column {col!r}") for i, r in enumerate(rows, 1)]
    values = label_values(rows, col, where)
    check_one_kind([r.get(col) for r in rows], f"{where}, column {col!r}")
    return values


def _number(value: Any, where: str) -> float | None:
    """A regression target: a finite number (or a string of one); None where the cell is empty or null."""
    if is_empty(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, np.number)):
        raise DataError(f"{where}: expected a number, got {type(value).__name__} {value!r:.60}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        # a written-out 'nan' is not an empty cell (NaN from pandas or Parquet is, and was read above)
        raise DataError(f"{where}: expected a finite number, got {value!r} (leave the cell empty for no target)")
    if abs(number) > TARGET_LIMIT:
        raise DataError(f"{where}: {value!r} is beyond the range a target can train at (|value| <= {TARGET_LIMIT:g})")
    return number


def task_labels(task: str, src: TaskSource, train_values: list[Any]) -> list[str]:
    if src.kind in ("regression", "pair_similarity"):
        if not any(v is not None for v in train_values):
            raise DataError(f"task {task!r}: no labelled training rows")
        return []
    if src.kind == "multi_label":
        labelled = [row for row in train_values if row is not None]
        seen = {label for row in labelled for label in row}
        names = list(src.labels) if src.labels else list(src.columns) if src.columns else sorted_labels(seen)
        if not labelled:
            raise DataError(f"task {task!r}: no labelled training rows")
        if len(names) < 2:
            raise DataError(f"task {task!r}: needs at least 2 labels, found {names}")
        never = [name for name in names if name not in seen]
        if never:
            given = "label_columns" if src.columns else "labels"
            raise DataError(
                f"task {task!r}: label(s) {', '.join(map(repr, never[:5]))} of tasks.{task}.{given} are on no "
                f"training row: a head cannot learn them (it would always predict no); add rows that have "
                f"them or remove them from tasks.{task}.{given}"
            )
        return names
    if src.kind == "token_classification":
        seen = {tag for row in train_values if row is not None for tag in row}
        names = list(src.labels) if src.labels else bio_labels(seen)
    else:
        seen = {v for v in train_values if v is not None}
        names = list(src.labels) if src.labels else sorted_labels(seen)
    if not seen:
        raise DataError(f"task {task!r}: no labelled training rows")
    if len(names) < 2:
        raise DataError(f"task {task!r}: needs at least 2 labels, found {names}")
    return names

"""Multi-label cells: a row's label set from a list, a delimited string or one 0/1 column per label, and
how an empty cell reads (no labels, or no row of the task)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtst.errors import DataError

if TYPE_CHECKING:
    from mtst.data.sources import TaskSource


def label_value(value: Any, where: str = "a label cell") -> str | None:
    """A label cell as a normalised string (an integral float reads as the integer); None where empty.

    A label is a string, a whole number or a float; a list, a mapping or any other value is refused
    (``[["books"]]`` must not become a label named ``"['books']"``).
    """
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        if value.is_integer():
            value = int(value)
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: expected a label (a string or a number), got {type(value).__name__} {value!r:.60}")
    text = str(value).strip()
    return text or None


def _kind_of(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return "true/false"
    if isinstance(value, (int, float, np.number)):
        return None if isinstance(value, float) and value != value else "number"
    if isinstance(value, str):
        return "text" if value.strip() else None
    return None


def check_one_kind(cells: list[Any], where: str) -> None:
    """A label column (a JSON list's items included) holds one kind of label: text, numbers or true/false.
    ``1`` among ``"books"`` and ``"toys"`` is more likely a slip than a label named '1': refused, naming a
    row of each kind. (CSV cells are all text: only JSON Lines, JSON and Parquet can mix.)"""
    first: dict[str, tuple[int, Any]] = {}
    for row, cell in enumerate(cells, 1):
        items = cell.tolist() if isinstance(cell, np.ndarray) else cell
        for item in items if isinstance(items, (list, tuple)) else [items]:
            kind = _kind_of(item)
            if kind is not None and kind not in first:
                first[kind] = (row, item)
    if len(first) > 1:
        shown = "; ".join(f"row {row} holds {kind} {value!r}" for kind, (row, value) in first.items())
        raise DataError(
            f"{where}: labels of more than one kind ({shown}); write every label the same way, e.g. as text"
        )


_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def flag(value: Any) -> bool | None:
    """A 0/1 cell: on, off, or None where empty; ValueError for anything else."""
    if is_empty(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(value)


def one_hot_set(row: dict[str, Any], columns: tuple[str, ...], where: str, empty: bool) -> list[str] | None:
    """The labels whose 0/1 column is on in this row; a row with every column empty is a row with no labels
    where ``empty`` (:func:`empty_is_none`), else a row without the task (None)."""
    flags = {}
    for col in columns:
        try:
            flags[col] = flag(row.get(col))
        except ValueError:
            raise DataError(f"{where}, column {col!r}: expected 0 or 1 (or true/false), got {row.get(col)!r}") from None
    if all(on is None for on in flags.values()):
        return [] if empty else None
    return [col for col, on in flags.items() if on]


def empty_is_none(src: TaskSource, alone: bool) -> bool:
    """Whether an empty multi-label cell is a row with none of the labels (else a row without the task)."""
    return src.empty_cell == "none" or (src.empty_cell == "auto" and alone)


def is_empty(value: Any) -> bool:
    """An empty cell: None, NaN (pandas' and Parquet's missing value) or a blank string."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, float) and value != value)


def empty_cell_note(
    rows: list[dict[str, Any]], col: str, src: TaskSource, alone: bool, source: str | Path, task: str
) -> list[str]:
    """Say how a multi-label column's empty cells were read, where it has any: the two readings differ in
    which rows train and score, and a CSV writes an empty label set as an empty cell."""
    if src.kind != "multi_label":
        return []
    cells = src.columns or (col,)
    empty = sum(all(is_empty(r.get(c)) for c in cells) for r in rows)
    if not empty:
        return []
    if empty_is_none(src, alone):
        how, other = "read as no labels", "empty_cell: missing leaves such rows out of the task"
    else:
        how, other = "left out of the task (other tasks label this file)", "empty_cell: none reads them as no labels"
    cell = f"an empty {col!r} cell" if not src.columns else "every label column empty"
    return [f"{task}: {empty} of {len(rows)} rows of {Path(source).name} have {cell}, {how} ({other})"]


DELIMITERS = (",", ";", "|")  # what a multi-label cell's labels are usually joined by


def label_set(
    value: Any, delimiter: str, where: str, empty: bool = False, whole: frozenset[str] = frozenset()
) -> list[str] | None:
    """A multi-label cell: a list, a JSON list in a string, or labels joined by ``delimiter``.

    ``[]`` (or ``"[]"``) is a row with none of the labels; an empty cell or null is one too where ``empty``
    (:func:`empty_is_none`), else a row without the task (None). A part of a joined cell that holds
    another common delimiter (``books;positive`` split at ``,``) cannot be read unambiguously: it is
    refused unless ``whole`` (the config's ``labels``) names it as one label.
    """
    if is_empty(value):
        return [] if empty else None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise DataError(f"{where}: {text[:60]!r} starts like a JSON list but is not one") from None
        else:
            value = [part.strip() for part in text.split(delimiter)]
            _check_joined(value, delimiter, where, whole)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: expected a list of labels, got {type(value).__name__} {value!r}")
    labels = []
    for item in value:
        label = label_value(item, f"{where}, in {value!r:.60}")
        if label is None:
            raise DataError(f"{where}: an empty label in {value!r}")
        if label not in labels:
            labels.append(label)
    return labels


def _check_joined(parts: list[str], delimiter: str, where: str, whole: frozenset[str]) -> None:
    for part in parts:
        other = next((d for d in DELIMITERS if d != delimiter and d in part), None)
        if other is not None and part not in whole:
            raise DataError(
                f"{where}: {part!r} looks like several labels joined by {other!r}, but cells are split at "
                f"{delimiter!r}; set the task's label_delimiter: {other!r}, or list {part!r} in its labels "
                f"to keep it as one label"
            )

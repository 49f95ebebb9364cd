"""Where one task's labels come from (:class:`TaskSource`): what every reader of label cells is told."""

from __future__ import annotations

from typing import NamedTuple


class TaskSource(NamedTuple):
    """Where one task's labels come from: column, fixed label list, own files, head type."""

    column: str
    labels: list[str] | None = None
    own: dict[str, str | None] | None = None
    kind: str = "classification"
    fallback_column: str | None = None
    delimiter: str = ","  # multi-label cells of CSV/TSV files: the labels of a row, split at this
    pair: tuple[str, str] | None = None  # a pair task's two text columns
    empty_cell: str = "auto"  # multi-label: an empty cell is no labels ("none") or no row of the task ("missing")
    columns: tuple[str, ...] | None = None  # multi-label: one 0/1 column per label, named by its label

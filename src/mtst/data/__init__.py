"""Labelled rows for training and scoring: each task's labels, targets or pairs, split by split.

Files are read by :mod:`mtst.data.files` (its readers are importable from here too). Every error
names the file and, where it helps, the row and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtst.data.columns import columns_of, encode_labels, task_column, task_labels, task_values
from mtst.data.files import (  # noqa: F401  (re-exported: mtst.data is where callers read files from)
    CONLL_SUFFIXES,
    TABLE_SUFFIXES,
    bio_labels,
    check_tagged_row,
    check_texts,
    column,
    load_table,
    read_conll,
    read_delimited,
    read_records,
    read_texts,
    text_problem,
)
from mtst.data.labelsets import empty_cell_note
from mtst.data.sources import TaskSource
from mtst.data.splits import MISSING, Split, TaskData, subsample
from mtst.errors import DataError

if TYPE_CHECKING:
    from mtst.config import RunConfig


# --------------------------------------------------------------------------- training data
def _row_texts(rows: list[dict[str, Any]], text_column: str, tokens_column: str, source: str) -> list[str]:
    """The text column, or the words joined by spaces for pre-tokenised rows without one."""
    if rows and text_column not in rows[0] and tokens_column in rows[0]:
        return [" ".join(map(str, r.get(tokens_column) or [])) or "" for r in rows]
    return check_texts(column(rows, text_column, source), source)


def _load_part(field: str, source: str) -> list[dict[str, Any]]:
    """Rows of one configured data file; any error names the config field and the resolved path."""
    path = Path(source).expanduser()
    if not path.exists():
        given = "" if path.is_absolute() else f" (given as {source!r})"
        raise DataError(f"{field}: no such file: {path.resolve()}{given}")
    try:
        return load_table(path)
    except DataError as exc:
        raise DataError(f"{field}: {exc}") from None


def build_task_data(
    tasks: dict[str, TaskSource | tuple],
    shared: dict[str, str | None],
    text_column: str,
    tokens_column: str = "tokens",
) -> TaskData:
    """Assemble train/validation/test splits for several tasks.

    ``tasks`` maps a task to its :class:`TaskSource`. Rows of the shared
    sources carry a label for every task whose column they have; rows of a
    task's own sources carry only that task. Label sets are inferred from
    train unless given; a label outside the set is an error naming it. Token
    tasks read a list of words (``tokens_column``) and one tag per word.
    """
    sources = {t: TaskSource(*spec) for t, spec in tasks.items()}
    collected: dict[str, tuple[list[str], dict[str, list[Any]], list[list[str] | None], list[str | None]]] = {}
    notes: list[str] = []
    for split in ("train", "validation", "test"):
        texts: list[str] = []
        seconds: list[str | None] = []
        words: list[list[str] | None] = []
        raw: dict[str, list[Any]] = {t: [] for t in sources}
        for key, source, owners in _split_files(split, shared, sources):
            rows = _load_part(key, source)
            keys = columns_of(rows)
            part_words = [r.get(tokens_column) if isinstance(r.get(tokens_column), list) else None for r in rows]
            labelled_by = [t for t in owners if task_column(sources[t], keys) is not None]
            for task, src in sources.items():
                col = task_column(src, keys) if task in owners else None
                if col is None:
                    if task in owners and split == "train":
                        raise _no_label_column(source, task, src, keys)
                    raw[task] += [None] * len(rows)
                else:
                    where = f"{source}: task {task!r}"
                    alone = labelled_by == [task]
                    raw[task] += task_values(rows, col, src, part_words, tokens_column, where, alone)
                    notes += empty_cell_note(rows, col, src, alone, source, task)
            pair = _pair_columns(key, {t: sources[t] for t in owners})
            if pair is None:
                texts += _row_texts(rows, text_column, tokens_column, source)
                seconds += [None] * len(rows)
            else:
                first, second = pair_texts(rows, pair, source)
                texts += first
                seconds += second
            words += part_words
        if texts:
            collected[split] = (texts, raw, words, seconds)
    if "train" not in collected:
        raise DataError("no training rows: set data.train (or a task's data.train)")
    labels = {task: task_labels(task, src, collected["train"][1][task]) for task, src in sources.items()}
    data = TaskData(labels=labels, notes=notes)
    for split, (texts, raw, words, seconds) in collected.items():
        encoded = _encode_split(split, texts, raw, words, sources, labels, "train")
        encoded.second = seconds if any(s is not None for s in seconds) else None
        data.splits[split] = encoded
    return data


def _split_files(
    split: str, shared: dict[str, str | None], sources: dict[str, TaskSource]
) -> list[tuple[str, str, list[str]]]:
    """The files of one split: ``(config key, path, the tasks it labels)``, the shared one first."""
    parts: list[tuple[str, str, list[str]]] = []
    if shared.get(split):
        parts.append((f"data.{split}", shared[split], [t for t, src in sources.items() if src.own is None]))
    for task, src in sources.items():
        if src.own and src.own.get(split):
            parts.append((f"tasks.{task}.data.{split}", src.own[split], [task]))
    return parts


def _no_label_column(source: str, task: str, src: TaskSource, keys: set[str]) -> DataError:
    """A training file without a task's label column(s): the columns it has, and the key that fixes it."""
    columns = ", ".join(sorted(keys))
    if src.columns:
        absent = ", ".join(c for c in src.columns if c not in keys)
        return DataError(f"{source}: no column(s) {absent} of task {task!r}; columns are: {columns}")
    guess = next((c for c in ("label", "labels", "target", "score") if c in keys), None)
    hint = f" (e.g. label_column: {guess})" if guess else ""
    return DataError(
        f"{source}: no column {src.column!r} for task {task!r}; columns are: {columns}; "
        f"set tasks.{task}.label_column to the column that holds its labels{hint}"
    )


def _pair_columns(key: str, owners: dict[str, TaskSource]) -> tuple[str, str] | None:
    """The two text columns of a file read by pair tasks (None: a file of single texts); a file read
    by pair tasks on other columns, or by pair and single-text tasks together, is an error."""
    pairs = {src.pair for src in owners.values()}
    if pairs <= {None}:
        return None
    if len(pairs) > 1:
        raise DataError(
            f"{key}: read by tasks on different text columns ({', '.join(owners)}); give each pair task its own "
            "files (tasks.NAME.data)"
        )
    return next(iter(pairs))


def pair_texts(rows: list[dict[str, Any]], pair: tuple[str, str], source: str | Path) -> tuple[list[str], list[str]]:
    """Both texts of every row of a pair file; a missing or empty text names its row and column."""
    first, second = pair
    return (
        check_texts(column(rows, first, source), f"{source}, column {first!r}"),
        check_texts(column(rows, second, source), f"{source}, column {second!r}"),
    )


def _encode_split(
    name: str,
    texts: list[str],
    raw: dict[str, list[Any]],
    words: list[list[str] | None],
    sources: dict[str, TaskSource],
    labels: dict[str, list[str]],
    known_from: str,
) -> Split:
    """Raw label strings (or tag lists) -> a :class:`Split` of indices."""
    encoded: dict[str, np.ndarray] = {}
    tags: dict[str, list[np.ndarray | None]] = {}
    targets: dict[str, np.ndarray] = {}
    for task, values in raw.items():
        where = f"task {task!r}: {name}"
        origin = "the labels given in the config" if sources[task].labels and known_from == "train" else known_from
        if sources[task].kind == "token_classification":
            flat = [tag for row in values if row is not None for tag in row]
            index = encode_labels(flat, labels[task], where, origin)
            tags[task], at = [], 0
            for row in values:
                tags[task].append(None if row is None else index[at : at + len(row)])
                at += 0 if row is None else len(row)
            encoded[task] = np.array([MISSING if row is None else 0 for row in values], dtype=np.int64)
        elif sources[task].kind == "multi_label":
            flat = [label for row in values if row is not None for label in row]
            encode_labels(flat, labels[task], where, origin)  # an unknown label is an error naming it
            column = {label: j for j, label in enumerate(labels[task])}
            matrix = np.zeros((len(values), len(labels[task])), dtype=np.float32)
            for i, row in enumerate(values):
                matrix[i, [column[label] for label in row or ()]] = 1.0
            targets[task] = matrix
            encoded[task] = np.array([MISSING if row is None else 0 for row in values], dtype=np.int64)
        elif sources[task].kind in ("regression", "pair_similarity"):
            targets[task] = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
            encoded[task] = np.array([MISSING if v is None else 0 for v in values], dtype=np.int64)
        else:
            encoded[task] = encode_labels(values, labels[task], where, origin)
    has_words = any(w is not None for w in words)
    return Split(name, texts, encoded, words if has_words else None, tags, targets)


def labelled_split(
    source: str | Path,
    sources: dict[str, TaskSource],
    labels: dict[str, list[str]],
    text_column: str = "text",
    tokens_column: str = "tokens",
    required: bool = True,
) -> Split | None:
    """One file scored against a trained model's tasks: every task whose label column it has (a file
    with none is an error, or None where not ``required``)."""
    rows = load_table(source)
    words = [r.get(tokens_column) if isinstance(r.get(tokens_column), list) else None for r in rows]
    raw: dict[str, list[Any]] = {}
    keys = columns_of(rows)
    # a file of pairs (it has a pair task's two text columns) is scored for pair tasks, else for the others
    pair = next((s.pair for s in sources.values() if s.pair and set(s.pair) <= keys), None)
    columns = {t: task_column(s, keys) for t, s in sources.items() if s.pair == pair}
    labelled_by = [t for t, col in columns.items() if col is not None]
    for task, col in columns.items():
        if col is not None:
            alone = labelled_by == [task]
            raw[task] = task_values(rows, col, sources[task], words, tokens_column, f"{source}: task {task!r}", alone)
    if not raw and not required:
        return None
    if not raw:
        wanted = ", ".join(f"{t} (column {s.column!r})" for t, s in sources.items())
        raise DataError(f"{source}: no label column for any task of this model; expected one of: {wanted}")
    if pair is not None:
        texts, second = pair_texts(rows, pair, source)
        split = _encode_split(str(source), texts, raw, words, {t: sources[t] for t in raw}, labels, "the model")
        split.second = list(second)
        return split
    texts = _row_texts(rows, text_column, tokens_column, str(source))
    return _encode_split(str(source), texts, raw, words, {t: sources[t] for t in raw}, labels, "the model")


def load_task_data(config: RunConfig) -> TaskData:
    """Every labelled task's splits (masked-LM tasks need no labels: they use all training texts)."""
    specs = {
        name: TaskSource(
            config.label_column(name),
            task.labels,
            task.data.model_dump(include={"train", "validation", "test"}) if task.data else None,
            task.type,
            "tags" if task.type == "token_classification" and task.label_column is None else None,
            task.label_delimiter,
            task.pair_columns,
            task.empty_cell,
            tuple(task.label_columns) if task.label_columns else None,
        )
        for name, task in config.tasks.items()
        if task.type != "masked_lm"
    }
    shared = config.data.model_dump(include={"train", "validation", "test"})
    data = build_task_data(specs, shared, config.data.text_column, config.data.tokens_column)
    if config.data.train_fraction < 1.0:
        data.splits["train"] = subsample(data.splits["train"], config.data.train_fraction, config.data.fraction_seed)
    return data

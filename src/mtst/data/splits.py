"""Split by split: a split's texts and per-task labels (:class:`Split`), every split of a run and the
label names of each task (:class:`TaskData`), and a seeded subsample of a split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtst.constants import IGNORE_INDEX

MISSING = IGNORE_INDEX  # a row without a label for a task


@dataclass
class Split:
    """Texts of one split with an integer label per task (``-100`` = no label for that task).

    For a token task, ``labels`` only marks which rows are tagged (0) or not
    (``-100``); the word-level tag indices are in ``tags`` and the rows' words
    in ``words``. Multi-label and regression tasks mark labelled rows the same
    way; their targets are in ``targets``: a ``(rows, labels)`` 0/1 matrix, or
    the value per row (NaN where a row has none). Rows of pair tasks hold their
    first text in ``texts`` and their second in ``second`` (None on other rows).
    """

    name: str
    texts: list[str]
    labels: dict[str, np.ndarray]
    words: list[list[str] | None] | None = None
    tags: dict[str, list[np.ndarray | None]] = field(default_factory=dict)
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    second: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def rows_for(self, task: str) -> np.ndarray:
        return np.flatnonzero(self.labels[task] != MISSING)

    def labelled_rows(self) -> np.ndarray:
        """Rows with a label for at least one task (what an epoch goes through)."""
        return np.flatnonzero(np.any(np.stack([v != MISSING for v in self.labels.values()]), axis=0))


@dataclass
class TaskData:
    """Every split of a run plus the label names of each task."""

    labels: dict[str, list[str]]
    splits: dict[str, Split] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how the files were read, where a user should know


def subsample(split: Split, fraction: float, seed: int = 0) -> Split:
    """A random ``fraction`` of a split's rows (at least one; same rows for the same seed)."""
    n = max(1, round(fraction * len(split)))
    rows = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    return Split(
        split.name,
        [split.texts[i] for i in rows],
        {t: v[rows] for t, v in split.labels.items()},
        None if split.words is None else [split.words[i] for i in rows],
        {t: [tags[i] for i in rows] for t, tags in split.tags.items()},
        {t: v[rows] for t, v in split.targets.items()},
        None if split.second is None else [split.second[i] for i in rows],
    )

"""Reading texts and labelled rows from files.

CSV, JSON Lines (or a JSON list), Parquet and plain text (one text a line).
Every error names the file and, where it helps, the row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def _read_text_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8") from exc


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV/TSV, JSON Lines, JSON list or Parquet file, as dicts."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError(f"{p}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
        if not p.exists():
            raise DataError(f"{p}: no such file")
        return pq.read_table(p).to_pylist()
    text = _read_text_file(p)
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        return [dict(row) for row in reader]
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not all(isinstance(r, dict) for r in data):
            raise DataError(f"{p}: expected a list of objects")
        return data
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}, line {lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{p}, line {lineno}: expected a JSON object")
            rows.append(row)
        return rows
    raise DataError(f"{p}: unsupported file type {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)} or .txt")


def column(rows: Sequence[dict[str, Any]], name: str, source: str | Path) -> list[Any]:
    """One column of a table; a missing column names the ones that exist."""
    if not rows:
        return []
    if name not in rows[0]:
        raise DataError(f"{source}: no column {name!r}; columns are: {', '.join(map(str, rows[0]))}")
    missing = [i for i, r in enumerate(rows, start=1) if name not in r]
    if missing:
        raise DataError(f"{source}: column {name!r} is missing on row(s) {_rows(missing)}")
    return [r[name] for r in rows]


def check_texts(texts: Sequence[Any], source: str | Path) -> list[str]:
    """Texts must be non-empty strings; blank ones are listed by row number."""
    bad = [i for i, t in enumerate(texts, start=1) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(f"{source}: empty or non-text value on row(s) {_rows(bad)}")
    return list(texts)


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts from a file: one a line for plain text, else ``text_column`` of a table."""
    p = Path(path)
    if p.suffix.lower() in TABLE_SUFFIXES:
        rows = read_records(p)
        texts = column(rows, text_column, p)
    else:
        texts = [line for line in _read_text_file(p).splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{p}: no texts found")
    return check_texts(texts, p)


def _rows(numbers: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


# --------------------------------------------------------------------------- training data
MISSING = -100


@dataclass
class Split:
    """Texts of one split with an integer label per task (``-100`` = no label for that task)."""

    name: str
    texts: list[str]
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.texts)

    def rows_for(self, task: str) -> np.ndarray:
        return np.flatnonzero(self.labels[task] != MISSING)


@dataclass
class TaskData:
    """Every split of a run plus the label names of each task."""

    labels: dict[str, list[str]]
    splits: dict[str, Split] = field(default_factory=dict)


def load_table(source: str | Path) -> list[dict[str, Any]]:
    """Rows from a file, or from a directory saved with ``datasets.Dataset.save_to_disk``."""
    p = Path(source).expanduser()
    if p.is_dir():
        try:
            import datasets
        except ImportError as exc:
            raise DataError(f"{p} is a directory; reading a saved dataset needs `pip install datasets`") from exc
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:
            raise DataError(f"{p}: not a saved Hugging Face dataset ({exc})") from exc
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{p} holds several splits ({', '.join(ds)}); point to one of them")
        return ds.to_list()
    rows = read_records(p)
    if not rows:
        raise DataError(f"{p}: no rows")
    return rows


def _label_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        if value.is_integer():
            value = int(value)
    text = str(value).strip()
    return text or None


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


def label_values(rows: Sequence[dict[str, Any]], col: str) -> list[str | None]:
    """A label column as normalised strings (None where missing)."""
    return [_label_value(r.get(col)) for r in rows]


def _sorted_labels(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def build_task_data(
    tasks: dict[str, tuple[str, list[str] | None, dict[str, str | None] | None]],
    shared: dict[str, str | None],
    text_column: str,
) -> TaskData:
    """Assemble train/validation/test splits for several tasks.

    ``tasks`` maps a task to (label column, given labels or None, its own
    sources or None). Rows of the shared sources carry a label for every task
    whose column they have; rows of a task's own sources carry only that task.
    Label sets are inferred from train unless given; a label outside the set
    is an error naming it.
    """
    collected: dict[str, tuple[list[str], dict[str, list[str | None]]]] = {}
    for split in ("train", "validation", "test"):
        texts: list[str] = []
        raw: dict[str, list[str | None]] = {t: [] for t in tasks}
        parts: list[tuple[str, list[str]]] = []
        if shared.get(split):
            parts.append((shared[split], [t for t, spec in tasks.items() if spec[2] is None]))
        for task, (_, _, own) in tasks.items():
            if own and own.get(split):
                parts.append((own[split], [task]))
        for source, owners in parts:
            rows = load_table(source)
            part_texts = check_texts(column(rows, text_column, source), source)
            for task in tasks:
                if task in owners:
                    col = tasks[task][0]
                    if col not in rows[0]:
                        if split != "train":
                            raw[task] += [None] * len(rows)
                            continue
                        columns = ", ".join(map(str, rows[0]))
                        raise DataError(f"{source}: no column {col!r} for task {task!r}; columns are: {columns}")
                    raw[task] += label_values(rows, col)
                else:
                    raw[task] += [None] * len(rows)
            texts += part_texts
        if texts:
            collected[split] = (texts, raw)
    if "train" not in collected:
        raise DataError("no training rows: set data.train (or a task's data.train)")
    labels: dict[str, list[str]] = {}
    for task, (_, given, _) in tasks.items():
        seen = {v for v in collected["train"][1][task] if v is not None}
        if not seen:
            raise DataError(f"task {task!r}: no labelled training rows")
        names = list(given) if given else _sorted_labels(seen)
        if len(names) < 2:
            raise DataError(f"task {task!r}: needs at least 2 labels, found {names}")
        labels[task] = names
    data = TaskData(labels=labels)
    for split, (texts, raw) in collected.items():
        encoded = {
            task: encode_labels(
                values,
                labels[task],
                f"task {task!r}: {split}",
                "the labels given in the config" if tasks[task][1] else "train",
            )
            for task, values in raw.items()
        }
        data.splits[split] = Split(split, texts, encoded)
    return data


# --------------------------------------------------------------------------- batching
def length_grouped_batches(
    indices: np.ndarray, lengths: Sequence[int], batch_size: int, rng: np.random.Generator, bucket: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows, so each pads little.

    Rows are shuffled, cut into buckets of ``bucket`` batches, sorted by
    length inside a bucket, split into batches, and the batches shuffled:
    random enough for SGD, with most of the padding gone.
    """
    perm = rng.permutation(indices)
    batches: list[np.ndarray] = []
    span = batch_size * bucket
    for start in range(0, len(perm), span):
        chunk = perm[start : start + span]
        chunk = chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def task_probabilities(counts: dict[str, int], sampling: str, temperature: float = 2.0) -> dict[str, float]:
    """How often each task is drawn: by size, by size^(1/T), or evenly (round robin)."""
    if sampling == "round_robin":
        return {t: 1.0 / len(counts) for t in counts}
    power = 1.0 if sampling == "proportional" else 1.0 / temperature
    weights = {t: float(n) ** power for t, n in counts.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def epoch_batches(
    split: Split,
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    batching: str = "mixed",
    sampling: str = "proportional",
    temperature: float = 2.0,
) -> list[tuple[np.ndarray, str | None]]:
    """One epoch of ``(row indices, task or None)``; ``None`` means every task's labels count.

    An epoch has as many batches as the labelled rows fill. ``mixed`` batches
    hold rows of any task; ``per_task`` batches hold one task, chosen per
    batch by the sampling rule. ``temperature`` and ``round_robin`` re-weight
    tasks by drawing rows from each task's own pool.
    """
    pools = {t: split.rows_for(t) for t in split.labels}
    pools = {t: p for t, p in pools.items() if len(p)}
    labelled = np.flatnonzero(np.any(np.stack([split.labels[t] != MISSING for t in split.labels]), axis=0))
    n_batches = -(-len(labelled) // batch_size)
    if batching == "mixed" and (sampling == "proportional" or len(pools) == 1):
        return [(b, None) for b in length_grouped_batches(labelled, lengths, batch_size, rng)]
    probs = task_probabilities({t: len(p) for t, p in pools.items()}, sampling, temperature)
    names = list(pools)
    queues = {t: list(rng.permutation(pools[t])) for t in names}

    def draw(task: str) -> int:
        if not queues[task]:
            queues[task] = list(rng.permutation(pools[task]))
        return int(queues[task].pop())

    def pick(i: int) -> str:
        if sampling == "round_robin":
            return names[i % len(names)]
        return names[int(rng.choice(len(names), p=[probs[t] for t in names]))]

    out: list[tuple[np.ndarray, str | None]] = []
    for b in range(n_batches):
        if batching == "per_task":
            task = pick(b)
            out.append((np.array([draw(task) for _ in range(batch_size)]), task))
        else:
            rows = [draw(pick(b * batch_size + j)) for j in range(batch_size)]
            out.append((np.array(rows), None))
    return out

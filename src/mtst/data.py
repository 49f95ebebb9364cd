"""Reading texts and labelled rows from files.

CSV, JSON Lines (or a JSON list), Parquet and plain text (one text a line).
Every error names the file and, where it helps, the row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

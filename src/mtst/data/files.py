"""Reading files: tables (CSV/TSV, JSON Lines or a JSON list, Parquet, a saved ``datasets`` directory),
CoNLL tagged sentences and plain text. Every error names the file and, where it helps, the row."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtst.errors import DataError
from mtst.extras import missing
from mtst.texts import text_problem

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
        if missing("parquet"):
            raise DataError(f"{p}: reading Parquet needs pyarrow: pip install 'mtst[parquet]'")
        import pyarrow.parquet as pq

        if not p.exists():
            raise DataError(f"{p}: no such file")
        return pq.read_table(p).to_pylist()
    text = _read_text_file(p)
    if suffix in (".csv", ".tsv"):
        return read_delimited(text, "\t" if suffix == ".tsv" else ",", p)
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
        except _RepeatedKey as exc:
            raise DataError(f"{p}: an object holds the key {exc.args[0]!r} twice; which value is meant?") from None
        if not all(isinstance(r, dict) for r in data):
            raise DataError(f"{p}: expected a list of objects")
        return data
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}, line {lineno}: invalid JSON ({exc.msg})") from exc
            except _RepeatedKey as exc:
                raise DataError(f"{p}, line {lineno}: the key {exc.args[0]!r} appears twice; which is meant?") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}, line {lineno}: expected a JSON object")
            rows.append(row)
        return rows
    raise DataError(
        f"{p}: unsupported file type {suffix!r} for rows with columns; use one of {', '.join(TABLE_SUFFIXES)} "
        f"or a saved datasets directory"
    )


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json keeps the last of a repeated key without a word)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def read_delimited(text: str, delimiter: str, source: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV/TSV text, read strictly: a broken quote, or a row whose number of fields is not the
    header's (an unquoted comma in a text, a missing column), is an error naming the row, never a
    silently shortened text. Fields of any length are read (the csv module stops at 128 KB by default).
    """
    csv.field_size_limit(_FIELD_LIMIT)
    what = "TSV" if delimiter == "\t" else "CSV"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    try:
        for fields in reader:
            if not fields:
                continue  # a blank line
            if header is None:
                header = fields
                repeated = sorted({c for c in header if header.count(c) > 1})
                if repeated:
                    raise DataError(
                        f"{source}: the header names column(s) {', '.join(map(repr, repeated))} more than once; "
                        f"rename them (only one of each could be read)"
                    )
                continue
            if len(fields) != len(header):
                hint = " (quote texts that hold the delimiter)" if len(fields) > len(header) else ""
                raise DataError(
                    f"{source}, row {len(rows) + 1} (line {reader.line_num}): {len(fields)} field(s) where the header "
                    f"has {len(header)} ({', '.join(header)}){hint}"
                )
            rows.append(dict(zip(header, fields, strict=True)))
    except csv.Error as exc:
        raise DataError(f"{source}, row {len(rows) + 1} (line {reader.line_num}): not valid {what} ({exc})") from None
    return rows


_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


CONLL_SUFFIXES = (".conll", ".conllu", ".bio", ".iob", ".iob2")


def read_conll(path: str | Path) -> list[dict[str, Any]]:
    """CoNLL-style file: one ``word ... tag`` line per word, a blank line between sentences.

    The first column is the word and the last the tag; ``-DOCSTART-`` lines are
    skipped. Rows come back as ``{"tokens": [...], "tags": [...]}``.
    """
    p = Path(path)
    text = _read_text_file(p)
    rows: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate([*text.splitlines(), ""], start=1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                rows.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        if len(parts) < 2:
            raise DataError(f"{p}, line {lineno}: expected 'word ... tag', got {line.strip()!r}")
        tokens.append(parts[0])
        tags.append(parts[-1])
    if not rows:
        raise DataError(f"{p}: no tagged sentences found")
    return rows


def check_tagged_row(words: Any, tags: Any, where: str) -> tuple[list[str], list[str]]:
    """Words and tags must be equally long lists of non-empty strings."""
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise DataError(f"{where}: tokens must be a non-empty list of words")
    if not isinstance(tags, list) or len(tags) != len(words):
        got = len(tags) if isinstance(tags, list) else type(tags).__name__
        raise DataError(f"{where}: {len(words)} tokens but {got} tags; each word needs one tag")
    return [w.strip() for w in words], [str(t).strip() for t in tags]


def bio_labels(tags: set[str]) -> list[str]:
    """Tag set in a stable order: ``O`` first, then by entity type with ``B-`` before ``I-``."""

    def key(tag: str) -> tuple[int, str, str]:
        if tag == "O":
            return (0, "", "")
        prefix, _, kind = tag.partition("-")
        return (1, kind or prefix, prefix if kind else "")

    return sorted(tags, key=key)


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
    """Every text must pass :func:`text_problem`; bad ones are listed by row number."""
    bad = [(i, problem) for i, t in enumerate(texts, start=1) if (problem := text_problem(t))]
    if len(bad) == 1:
        raise DataError(f"{source}, row {bad[0][0]}: {bad[0][1]}")
    if bad:
        kinds = sorted({problem.split(" (")[0] for _, problem in bad})
        raise DataError(f"{source}: {' / '.join(kinds)} on row(s) {_rows([i for i, _ in bad])}")
    return list(texts)


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts from a file: one a line for plain text, else ``text_column`` of a table (a saved ``datasets``
    directory included, as every data key reads it)."""
    p = Path(path).expanduser()
    if p.suffix.lower() in TABLE_SUFFIXES or p.is_dir():
        rows = load_table(p)
        texts = column(rows, text_column, p)
    else:
        texts = [line for line in _read_text_file(p).splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{p}: no texts found")
    return check_texts(texts, p)


def _rows(numbers: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def load_table(source: str | Path) -> list[dict[str, Any]]:
    """Rows from a file, or from a directory saved with ``datasets.Dataset.save_to_disk``."""
    p = Path(source).expanduser()
    if p.is_dir():
        if missing("datasets"):
            raise DataError(f"{p} is a directory; reading a saved dataset needs datasets: pip install 'mtst[datasets]'")
        import datasets

        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:
            raise DataError(f"{p}: not a saved Hugging Face dataset ({exc})") from exc
        if isinstance(ds, datasets.DatasetDict):
            splits = list(ds)
            held = f"the split {splits[0]!r}" if len(splits) == 1 else f"{len(splits)} splits ({', '.join(splits)})"
            raise DataError(f"{p} is a DatasetDict holding {held}; point to one split's folder, e.g. {p / splits[0]}")
        return ds.to_list()
    if p.suffix.lower() in CONLL_SUFFIXES:
        return read_conll(p)
    rows = read_records(p)
    if not rows:
        raise DataError(f"{p}: no rows")
    return rows

"""What the command line reads and writes: texts from arguments or files, embeddings and prediction cells."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console

from mtst.errors import MtstError

err_console = Console(stderr=True)


def gather_pairs(path: Path | None, columns: str) -> tuple[list[str], list[str]]:
    """Both texts of every row of a file, from the two columns named ``first,second``."""
    from mtst.data import load_table, pair_texts

    names = [c.strip() for c in columns.split(",")]
    if len(names) != 2 or not all(names):
        raise MtstError(f"--pairs {columns!r}: name the two text columns, e.g. --pairs premise,hypothesis")
    if path is None:
        raise MtstError("--pairs reads a file: give --data FILE with those two columns")
    first, second = pair_texts(load_table(path), (names[0], names[1]), path)
    return first, second


def model_pairs(
    run: Path, path: Path | None, text_column: str, tasks: list[str] | None = None
) -> tuple[str, list[str], list[str]] | None:
    """Where the model has a pair task and a file has no ``text_column`` but that task's two text columns:
    the columns (``first,second``, what ``--pairs`` would name) and both texts of every row, from one read of
    the file. None otherwise; a model without pair tasks never reads the file here."""
    from mtst.constants import ONNX_META
    from mtst.data import columns_of, load_table, pair_texts
    from mtst.data.files import TABLE_SUFFIXES
    from mtst.modeling.saved import CONFIG_NAME, is_export, resolve_model_dir

    if path is None or (path.suffix.lower() not in TABLE_SUFFIXES and not path.is_dir()):
        return None  # a file of plain text lines has no columns: it holds single texts
    try:
        meta = run / ONNX_META if is_export(run) else resolve_model_dir(run) / CONFIG_NAME
        tasks_of_model = json.loads(meta.read_text(encoding="utf-8")).get("tasks", {})
    except (OSError, ValueError, MtstError):
        return None  # loading the model says what is wrong with it
    specs = [
        spec.get("text_columns")
        for name, spec in tasks_of_model.items()
        if isinstance(spec, dict) and (tasks is None or name in tasks)  # --tasks of single texts: no pairs
    ]
    pairs = [(p[0], p[1]) for p in specs if p and len(p) == 2]
    if not pairs:
        return None
    rows = load_table(path)
    columns = columns_of(rows)
    if text_column in columns:
        return None
    for first, second in pairs:
        if {first, second} <= columns:
            return f"{first},{second}", *pair_texts(rows, (first, second), path)
    return None


def gather_texts(texts: list[str] | None, path: Path | None, text_column: str, none_message: str) -> list[str]:
    """Texts from the arguments, then from a file; all non-empty."""
    from mtst.data import check_texts, read_texts

    items = list(texts or [])
    if path is not None:
        items += read_texts(path, text_column)
    if not items:
        raise MtstError(none_message)
    return check_texts(items, "arguments" if path is None else path)


class OutputClosed(Exception):
    """The reader of standard output closed it (``| head``): not an error, nothing more to write."""


def write_lines(lines: Iterable[str]) -> None:
    """Lines to standard output (JSON Lines when piped); a reader that closes the pipe ends the command
    quietly with status 0, as ``head`` expects, never with a traceback or status 1."""
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # the interpreter's final flush must not fail again
        os.dup2(devnull, sys.stdout.fileno())
        raise OutputClosed from None


def encode_with_progress(encoder: Any, items: list[str], batch_size: int) -> Any:
    if len(items) < 2000 or not sys.stderr.isatty():
        return encoder.encode(items, batch_size=batch_size)
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("encoding", total=len(items))
        return encoder.encode(items, batch_size=batch_size, progress=lambda n: bar.advance(task, n))


def write_embeddings(output: Path, texts: list[str], embeddings: Any) -> None:
    import numpy as np

    from mtst.fileio import atomic_file, atomic_write_text

    if output.suffix.lower() == ".npy":
        with atomic_file(output) as tmp, tmp.open("wb") as fh:
            np.save(fh, embeddings)
    else:
        lines = (
            json.dumps({"text": t, "embedding": [float(x) for x in vec]})
            for t, vec in zip(texts, embeddings, strict=True)
        )
        atomic_write_text(output, "".join(line + "\n" for line in lines))


def prediction_cell(value: dict) -> str:
    if "label" in value:
        return f"{value['label']} ({max(value['probabilities'].values()):.2f})"
    if "labels" in value:
        return ", ".join(f"{lab} ({value['probabilities'][lab]:.2f})" for lab in value["labels"]) or "(none)"
    if "value" in value or "similarity" in value:
        return f"{value.get('value', value.get('similarity')):.3f}"
    if "entities" not in value:
        return " ".join(value["tags"])
    return "; ".join(f"{e['text']} [{e['type']}]" for e in value["entities"]) or "(no entities)"

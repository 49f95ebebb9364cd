"""Human-readable results: rich tables on the terminal, PNG plots on disk."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mtst.extras import require
from mtst.fileio import atomic_write_text, read_json_object

PROGRESS_FILE_ENV = "MTST_PROGRESS_FILE"  # where a child run (of ``mtst compare``) reports its progress


class ReportingProgress(Progress):
    """A progress display that also writes its position to a file, about twice a second, as JSON
    (``description``, ``completed``, ``total``): how a parent shows a ``--quiet`` child run's progress."""

    def __init__(self, target: Path, *columns: Any, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.target = target
        self.last_write = 0.0

    def update(self, task_id: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        task = next((t for t in self.tasks if t.id == task_id), None)
        now = time.monotonic()
        if task is None or (now - self.last_write < 0.5 and not task.finished):
            return
        self.last_write = now
        record = {"description": task.description, "completed": task.completed, "total": task.total}
        with contextlib.suppress(OSError):  # progress is a courtesy; the run goes on without it
            atomic_write_text(self.target, json.dumps(record))


def progress_bar(console: Any, disable: bool, *extra: str) -> Progress:
    """The progress display of long work (training steps, sweep runs): bar, count, elapsed, ETA.

    Where ``MTST_PROGRESS_FILE`` is set, the position is also written there (:class:`ReportingProgress`).
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(x) for x in extra),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    target = os.environ.get(PROGRESS_FILE_ENV)
    if not target:
        return Progress(*columns, console=console, disable=disable)
    return ReportingProgress(Path(target), *columns, console=console, disable=disable)


def read_progress(path: Path) -> dict[str, Any] | None:
    """What :class:`ReportingProgress` last wrote (None before it wrote anything)."""
    return read_json_object(path)


METRIC_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    # (key in a task's metrics, column title, shown as a percentage)
    ("accuracy", "accuracy", True),
    ("macro_f1", "macro-F1", True),
    ("micro_f1", "micro-F1", True),
    ("precision", "entity P", True),
    ("recall", "entity R", True),
    ("f1", "entity F1", True),
    ("spearman", "Spearman", True),
    ("pearson", "Pearson", True),
    ("mae", "MAE", False),
)


def metrics_table(per_task: dict[str, dict], title: str) -> Table:
    """One row per task: rows scored, accuracy and macro-F1, and the columns other task types add
    (micro-F1 of multi-label tasks, entity precision/recall/F1 of tagging tasks, Spearman, Pearson and
    MAE of regression tasks); ``-`` where a figure does not apply to a task.

    A tagging task's accuracy is over words, its F1 over whole entities (seqeval); a multi-label task's
    accuracy is the share of rows whose whole label set is right.
    """
    core = ("accuracy", "macro_f1")
    columns = [c for c in METRIC_COLUMNS if c[0] in core or any(c[0] in m for m in per_task.values())]
    table = Table(title=title)
    table.add_column("task")
    table.add_column("rows", justify="right")
    for _, name, _ in columns:
        table.add_column(name, justify="right")
    for task, m in per_task.items():
        cells = [task, str(m["n"])]
        for key, _, percent in columns:
            value = m.get(key)
            cells.append("-" if value is None else f"{100 * value:.1f}" if percent else f"{value:.3f}")
        table.add_row(*cells)
    return table


def retention_table(kept: dict[str, Any], title: str = "kept of its start") -> Table | None:
    """The embedding's cosine to its start (and STS start -> end), each old head's agreement with the
    start (and its test figures start -> end), each also on ``keep.texts`` where the run held them;
    None when there is nothing to show."""
    if not kept:
        return None
    rows: list[tuple[str, str, str]] = []
    emb = kept.get("embedding", {})
    if emb:
        sts = emb.get("sts")
        change = (
            f"STS {100 * sts['start']:.1f} -> {100 * sts['end']:.1f}" if sts and sts.get("start") is not None else ""
        )
        rows.append(("embedding (cosine to start)", f"{emb['cosine']:.3f}", change))
        if "keep_texts" in emb:
            rows.append(("  on keep.texts", f"{emb['keep_texts']['cosine']:.3f}", ""))
    for task, m in kept.get("tasks", {}).items():
        test = m.get("test")
        change = ""
        if test and test.get("start") and test.get("end"):
            key = "accuracy" if "accuracy" in test["end"] else "f1"
            change = f"test {key} {100 * test['start'][key]:.1f} -> {100 * test['end'][key]:.1f}"
        rows.append((f"{task} (agreement)", f"{100 * m.get('agreement', 1.0):.1f}%", change))
        if "keep_texts" in m:
            rows.append(("  on keep.texts", f"{100 * m['keep_texts']['agreement']:.1f}%", ""))
    table = Table(title=f"{title} · keep.protect {kept.get('protect', '-')}")
    table.add_column("what")
    table.add_column("kept", justify="right")
    changes = any(change for _, _, change in rows)
    if changes:
        table.add_column("start -> end", justify="right")
    for row in rows:
        table.add_row(*(row if changes else row[:2]))
    return table


def per_class_table(task: str, metrics: dict) -> Table | None:
    """Per class (classification), per label (multi-label) or per entity type (tagging tasks); None for
    a regression task, which has no labels."""
    per = metrics.get("per_class") or metrics.get("per_label")
    if per is None:
        return None
    kind = "per label" if "per_label" in metrics else "per class" if "macro_f1" in metrics else "per entity type"
    table = Table(title=f"{task}: {kind}")
    for col in ("label", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, m in per.items():
        table.add_row(
            label, f"{100 * m['precision']:.1f}", f"{100 * m['recall']:.1f}", f"{100 * m['f1']:.1f}", str(m["support"])
        )
    return table


def confusion_table(task: str, metrics: dict) -> Table:
    labels = metrics["labels"]
    table = Table(title=f"{task}: confusion (rows = true, columns = predicted)")
    table.add_column("true \\ pred")
    for label in labels:
        table.add_column(label, justify="right")
    for label, row in zip(labels, metrics["confusion"], strict=True):
        table.add_row(label, *(str(x) for x in row))
    return table


def confusion_figure(task: str, metrics: dict) -> Any:
    """Confusion matrix figure (counts annotated, row-normalised colour); the title always fits."""
    require("plots", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(metrics["confusion"], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    labels = metrics["labels"]
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    scores = f"accuracy {100 * metrics['accuracy']:.1f}% · macro-F1 {100 * metrics['macro_f1']:.1f}%"
    fig.suptitle(f"{task}\n{scores}", fontsize=11)  # two lines: a small figure never cuts the figures off
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def plot_confusion(task: str, metrics: dict, path: Path) -> Path:
    """Write :func:`confusion_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = confusion_figure(task, metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

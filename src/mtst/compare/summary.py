"""A sweep's figures per strategy: ``results.json``'s runs averaged over seeds into rows, and the table
the console prints (:mod:`mtst.compare.report` turns them into sentences and a report)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtst.config import AUTO

NOISE_POINTS = 0.5  # differences below this (or below the seeds' spread) are called ties


@dataclass
class Row:
    """One strategy at one training fraction, over seeds."""

    label: str
    fraction: float
    primary: list[float]
    tasks: dict[str, dict[str, list[float]]]
    train_seconds: float
    trainable: int
    total: int
    peak_mb: float
    model_mb: float
    train_rows: int
    drift: float | None
    sts: float | None
    stale: dict[str, dict[str, float]] = field(default_factory=dict)
    stale_from: str | None = None
    chosen: str | None = None  # for ``auto``: the strategy (or strategies, over seeds) the recipe chose
    kept: float | None = None  # the embedding's mean cosine to its start on the training texts (metrics.json)
    heads_kept: float | None = None  # the old heads' mean agreement with the start (runs from model.init)

    @property
    def kept_cell(self) -> str:
        """What the run kept of its start: embedding cosine, and old heads' agreement where there are any."""
        if self.kept is None:
            return "-"
        heads = f" · heads {100 * self.heads_kept:.0f}%" if self.heads_kept is not None else ""
        return f"{self.kept:.3f}{heads}"

    @property
    def display(self) -> str:
        """The label, with the recipe's choice where the label is ``auto``: ``auto (full)``."""
        return f"{self.label} ({self.chosen})" if self.chosen else self.label

    @property
    def mean(self) -> float:
        return float(np.mean(self.primary))

    @property
    def std(self) -> float:
        return float(np.std(self.primary)) if len(self.primary) > 1 else 0.0


def split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict]]:
    """(flat summary, per-task detail) of a run, from test when it has one, else validation."""
    if metrics.get("test"):
        return metrics["test"], metrics.get("test_detail", {})
    flat = metrics.get("validation", {})
    detail: dict[str, dict] = defaultdict(dict)
    for key, value in flat.items():
        if "/" in key:
            task, name = key.split("/", 1)
            detail[task][name] = value
    return flat, dict(detail)


def summarize(payload: dict[str, Any]) -> list[Row]:
    """Group runs by (strategy, fraction) and average over seeds."""
    metric = payload["metric"]
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for run in payload["runs"]:
        if run.get("pooling") is None:
            groups[(run["label"], run["fraction"])].append(run)
    rows = []
    for (label, fraction), runs in groups.items():
        tasks: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        primary = []
        for run in runs:
            flat, detail = split_metrics(run["metrics"])
            primary.append(float(flat.get(metric, np.nan)))
            for task, m in detail.items():
                tasks[task]["accuracy"].append(m.get("accuracy", np.nan))  # regression and similarity: none
                tasks[task]["f1"].append(m.get("macro_f1", m.get("f1", m.get("spearman", np.nan))))
        stale: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in runs:
            for task, v in (run.get("stale_heads") or {}).get("tasks", {}).items():
                stale[task]["before"].append(v["before"])
                stale[task]["after"].append(v["after"])
        first = runs[0]
        rows.append(
            Row(
                label=label,
                fraction=fraction,
                primary=primary,
                tasks={t: dict(v) for t, v in tasks.items()},
                train_seconds=float(np.mean([r["metrics"]["train_seconds"] for r in runs])),
                trainable=int(first["metrics"]["trainable_parameters"]),
                total=int(first["metrics"]["total_parameters"]),
                peak_mb=float(np.mean([r["metrics"].get("peak_rss_mb", np.nan) for r in runs])),
                model_mb=float(np.mean([r["model_mb"] for r in runs])),
                train_rows=int(first["metrics"].get("train_rows", 0)),
                drift=mean_of([r.get("drift") for r in runs]),
                sts=mean_of([r.get("sts") for r in runs]),
                stale={t: {k: float(np.mean(v)) for k, v in d.items()} for t, d in stale.items()},
                stale_from=(first.get("stale_heads") or {}).get("from"),
                chosen=", ".join(sorted({r["metrics"].get("strategy", "?") for r in runs})) if label == AUTO else None,
                kept=mean_of([retention_of(r)[0] for r in runs]),
                heads_kept=mean_of([retention_of(r)[1] for r in runs]),
            )
        )
    return rows


def retention_of(run: dict[str, Any]) -> tuple[float | None, float | None]:
    """A run's embedding cosine to its start and its old heads' mean agreement (None: not recorded)."""
    kept = run["metrics"].get("retention") or {}
    heads = [m["agreement"] for m in kept.get("tasks", {}).values() if "agreement" in m]
    return kept.get("embedding", {}).get("cosine"), (float(np.mean(heads)) if heads else None)


def strategy_table(rows: list[Row], metric: str) -> Any:
    """The terminal summary of a sweep (rich): one line per strategy on the most training rows."""
    from rich.table import Table

    full = max(r.fraction for r in rows)
    train_rows = max(r.train_rows for r in rows if r.fraction == full)
    table = Table(title=f"strategies · {metric} · {train_rows:,} training rows")
    for col in ("strategy", "metric", "trainable", "train s", "drift", "kept"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in sorted((r for r in rows if r.fraction == full), key=lambda r: -r.mean):
        spread = f" ± {100 * r.std:.1f}" if len(r.primary) > 1 else ""
        drift = "-" if r.drift is None else f"{r.drift:.3f}"
        cells = [f"{100 * r.mean:.1f}{spread}", f"{r.trainable:,}", f"{r.train_seconds:.0f}", drift, r.kept_cell]
        table.add_row(r.display, *cells)
    return table


def mean_of(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or x != x else f"{100 * x:.{digits}f}"


def seconds_text(t: float) -> str:
    """A duration as the report prints it: tenths under 10 s, so two short runs never read '0 s vs 0 s'."""
    return f"{t:.1f} s" if t < 10 else f"{t:.0f} s"


def ratio(a: float, b: float) -> str:
    if b <= 0:
        return "n/a"
    r = a / b
    return f"{r:.1f}x" if r >= 1 else f"1/{1 / r:.1f}"

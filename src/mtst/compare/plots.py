"""The plots of the strategy report (PNG, matplotlib): metric against parameters and time, drift, curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtst.compare.summary import Row


def make_plots(payload: dict[str, Any], rows: list[Row], directory: Path) -> dict[str, Path]:
    """PNG plots: metric vs trainable parameters and vs time, learning curves, drift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    metric = payload["metric"]
    full = max(r.fraction for r in rows)
    at_full = [r for r in rows if r.fraction == full]
    paths: dict[str, Path] = {}

    def scatter(x_of: Any, xlabel: str, name: str, log: bool) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in at_full:
            ax.errorbar(x_of(r), 100 * r.mean, yerr=100 * r.std, fmt="o", capsize=3)
            ax.annotate(r.label, (x_of(r), 100 * r.mean), textcoords="offset points", xytext=(5, 5))
        if log:
            ax.set_xscale("log")
        ax.margins(x=0.12, y=0.1)  # room for the labels of the outermost points
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (x100)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths[name] = directory / f"{name}.png"
        fig.savefig(paths[name], dpi=110)
        plt.close(fig)

    scatter(lambda r: max(r.trainable, 1), "trainable parameters (log)", "metric_vs_parameters", True)
    scatter(lambda r: r.train_seconds, "training time (s)", "metric_vs_time", False)
    fractions = sorted({r.fraction for r in rows})
    if len(fractions) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label in dict.fromkeys(r.label for r in rows):
            points = sorted((r.train_rows, 100 * r.mean, 100 * r.std) for r in rows if r.label == label)
            xs, ys, es = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("training rows (log)")
        ax.set_ylabel(f"{metric} (x100)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths["learning_curves"] = directory / "learning_curves.png"
        fig.savefig(paths["learning_curves"], dpi=110)
        plt.close(fig)
    drifted = [r for r in at_full if r.drift is not None]
    if drifted:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([r.label for r in drifted], [r.drift for r in drifted], color="tab:orange")
        ax.set_ylabel("drift (1 - mean cosine)")
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        paths["drift"] = directory / "drift.png"
        fig.savefig(paths["drift"], dpi=110)
        plt.close(fig)
    return paths


# ---------------------------------------------------------------- rendering
Table = tuple[list[str], list[list[str]]]

"""The strategy report: figures from ``results.json`` to tables, plots and a recommendation.

The report is built once as a list of sections (paragraphs, tables, images)
and rendered twice: ``report.md`` (images as files in ``plots/``) and a
self-contained ``report.html`` (images inlined). Every sentence of the
recommendation is computed from the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtst.compare.summary import NOISE_POINTS, Row, pct, ratio, seconds_text, split_metrics, summarize


def recommend(payload: dict[str, Any], rows: list[Row]) -> list[str]:
    """Sentences naming the best strategy and why, each computed from the figures."""
    metric = payload["metric"]
    full = max(r.fraction for r in rows)
    at_full = sorted((r for r in rows if r.fraction == full), key=lambda r: -r.mean)
    out = _winner_sentences(metric, at_full)
    out += _data_size_sentences(rows)
    out += _drift_sentences(at_full)
    out += _sts_sentences(payload, at_full, metric)
    probes = pooling_rows(payload)
    if probes:
        top = max(probes, key=lambda p: p[1])
        out.append(
            f"For a linear probe on the frozen backbone, `{top[0]}` pooling scores best ({pct(top[1])} {metric})."
        )
    return out


def _winner_sentences(metric: str, at_full: list[Row]) -> list[str]:
    """The winner, its margin over the runner-up, and what the cheapest strategy gives up."""
    best = at_full[0]
    seeds = len(best.primary)
    spread = f" ± {100 * best.std:.1f}" if seeds > 1 else ""
    out = [
        f"**Recommended: `{best.display}`.** It has the best {metric} on {best.train_rows:,} training rows: "
        f"{pct(best.mean)}{spread} (mean{' ± std' if seeds > 1 else ''} over {seeds} seed{'s' if seeds > 1 else ''})."
    ]
    if len(at_full) < 2:
        return out
    second = at_full[1]
    gap = 100 * (best.mean - second.mean)
    noise = max(NOISE_POINTS, 100 * max(best.std, second.std))
    verdict = "within the noise of" if gap < noise else "ahead of"
    drift = ""
    if best.drift is not None and second.drift is not None:
        drift = f"; representation drift {best.drift:.3f} vs {second.drift:.3f}"
    out.append(
        f"`{best.label}` is {gap:.1f} points {verdict} the runner-up `{second.label}` "
        f"({pct(second.mean)}), at {ratio(best.train_seconds, second.train_seconds)} its training time "
        f"({seconds_text(best.train_seconds)} vs {seconds_text(second.train_seconds)}){drift}."
    )
    fastest = min(at_full, key=lambda r: r.train_seconds)
    close = 100 * (best.mean - fastest.mean)
    if fastest is not best and close < max(NOISE_POINTS, 100 * max(best.std, fastest.std)):
        out.append(
            f"When training time matters, `{fastest.label}` is only {close:.1f} points behind "
            f"at {ratio(fastest.train_seconds, best.train_seconds)} of the time."
        )
    elif fastest is not best:
        out.append(
            f"The cheapest strategy, `{fastest.label}`, trains in {fastest.train_seconds:.0f} s but is "
            f"{close:.1f} points behind."
        )
    return out


def _data_size_sentences(rows: list[Row]) -> list[str]:
    fractions = sorted({r.fraction for r in rows})
    if len(fractions) < 2:
        return []
    winners = []
    for f in fractions:
        top = max((r for r in rows if r.fraction == f), key=lambda r: r.mean)
        winners.append(f"`{top.label}` at {f:.0%} ({top.train_rows:,} rows, {pct(top.mean)})")
    same = len({w.split("`")[1] for w in winners}) == 1
    lead = "The same strategy wins at every data size: " if same else "The winner changes with data size: "
    return [lead + "; ".join(winners) + "."]


def _drift_sentences(at_full: list[Row]) -> list[str]:
    stale = [(r, t, v) for r in at_full for t, v in r.stale.items() if v.get("before") is not None]
    if not stale:
        return []
    r, task, v = max(stale, key=lambda x: x[2]["before"] - x[2]["after"])
    return [
        f"Feature drift, measured: a `{task}` head trained on the frozen backbone (`{r.stale_from}`) scores "
        f"{pct(v['before'])} there and {pct(v['after'])} on the `{r.label}` backbone without retraining; "
        "keep heads trained on the backbone they run on."
    ]


def _sts_sentences(payload: dict[str, Any], at_full: list[Row], metric: str) -> list[str]:
    base = payload["encoders"].get("sts_base")
    moved = [r for r in at_full if r.sts is not None]
    if base is None or not moved:
        return []
    best = at_full[0]
    most = min(moved, key=lambda r: r.sts)
    text = (
        f"General similarity (STS Spearman) is {100 * base:.1f} before training; after `{best.label}` it is "
        f"{100 * (best.sts or base):.1f}, and the largest loss is `{most.label}` ({100 * most.sts:.1f})."
    )
    # The strategy that trains part of the encoder and forgets least: the one to weigh
    # against the best when the encoder also serves similarity search.
    drifted = [r for r in moved if r.drift is not None and r.drift > 0 and r is not best]
    if drifted:
        kept = max(drifted, key=lambda r: r.sts)
        text += (
            f" Of the strategies that change the encoder, `{kept.label}` keeps the most "
            f"({100 * kept.sts:.1f}), at {pct(kept.mean)} {metric}."
        )
    return [text]


def pooling_rows(payload: dict[str, Any]) -> list[tuple[str, float, dict[str, float]]]:
    """(pooling, primary metric, per-task accuracy) of each linear-probe run."""
    out = []
    for run in payload["runs"]:
        if run.get("pooling"):
            flat, detail = split_metrics(run["metrics"])
            out.append(
                (
                    run["pooling"],
                    float(flat.get(payload["metric"], np.nan)),
                    {t: m.get("accuracy", np.nan) for t, m in detail.items()},
                )
            )
    return out


# ---------------------------------------------------------------- plots
def _cell(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    if np.isnan(arr).all():
        return "-"  # a figure the task does not have (a regression task's accuracy)
    return pct(float(arr.mean())) + (f" ± {100 * arr.std():.1f}" if len(arr) > 1 else "")


def build_sections(payload: dict[str, Any], rows: list[Row], plots: dict[str, Path]) -> list[dict[str, Any]]:
    """Report content, independent of the output format."""
    full = max(r.fraction for r in rows)
    at_full = sorted((r for r in rows if r.fraction == full), key=lambda r: -r.mean)
    tasks = list(dict.fromkeys(t for r in rows for t in r.tasks))
    sections = [
        {"title": "Recommendation", "paragraphs": recommend(payload, rows)},
        _strategy_section(payload, at_full, tasks, plots),
        _curve_section(rows, plots),
        _stale_section(at_full),
        _sts_section(payload, at_full),
        _pooling_section(payload, tasks),
        _failed_section(payload),
    ]
    return [s for s in sections if s is not None]


def _failed_section(payload: dict[str, Any]) -> dict[str, Any] | None:
    failed = payload.get("failed") or []
    if not failed:
        return None
    body = [[f"`{f['name']}`", " ".join(f["error"].split())[:300]] for f in failed]
    return {
        "title": "Runs that failed",
        "paragraphs": [
            f"{len(failed)} run(s) did not finish; the tables above hold only the runs that did. Each run's "
            "output is in `runs/<name>/output.log`; `mtst compare` again with the same options re-runs only these."
        ],
        "tables": [(["run", "error"], body)],
    }


def _strategy_section(
    payload: dict[str, Any], at_full: list[Row], tasks: list[str], plots: dict[str, Path]
) -> dict[str, Any]:
    metric, seeds = payload["metric"], len(payload["seeds"])
    header = ["strategy", f"{metric}{' ± std' if seeds > 1 else ''}"]
    header += [f"{t} acc" for t in tasks] + [f"{t} F1" for t in tasks]
    header += ["trainable params", "train s", "peak MB", "model MB", "drift", "kept"]
    body = [
        [f"`{r.display}`", _cell(r.primary)]
        + [_cell(r.tasks[t]["accuracy"]) if t in r.tasks else "-" for t in tasks]
        + [_cell(r.tasks[t]["f1"]) if t in r.tasks else "-" for t in tasks]
        + [f"{r.trainable:,}", f"{r.train_seconds:.0f}", f"{r.peak_mb:.0f}", f"{r.model_mb:.1f}"]
        + ["-" if r.drift is None else f"{r.drift:.3f}", r.kept_cell]
        for r in at_full
    ]
    enc = payload["encoders"]
    return {
        "title": "Strategies",
        "paragraphs": [
            f"{at_full[0].train_rows:,} training rows, {seeds} seed(s), scored on the "
            f"{enc.get('stale_split', 'test')} split. F1 is macro-F1 for sentence tasks and "
            "entity F1 for tagging tasks. Drift is 1 - mean cosine between the original and the fine-tuned "
            f"sentence embeddings of {enc.get('drift_texts', 0):,} texts; kept is each run's own record "
            "(metrics.json `retention`): the mean cosine of its embedding to the one it started from on its "
            "training texts, and its old heads' agreement with the start where it started from a trained "
            "model (`training.keep`). Train s includes "
            "encoding the texts once through a frozen backbone; the runs share that cache, so only the first "
            "run that needs it pays for it."
        ],
        "tables": [(header, body)],
        "images": [plots[k] for k in ("metric_vs_parameters", "metric_vs_time", "drift") if k in plots],
    }


def _curve_section(rows: list[Row], plots: dict[str, Path]) -> dict[str, Any] | None:
    fractions = sorted({r.fraction for r in rows})
    if len(fractions) < 2:
        return None
    labels = list(dict.fromkeys(r.label for r in rows))
    by = {(r.label, r.fraction): r for r in rows}
    header = ["strategy"] + [f"{f:.0%} ({by[(labels[0], f)].train_rows:,} rows)" for f in fractions]
    body = [
        [f"`{label}`"] + [_cell(by[(label, f)].primary) if (label, f) in by else "-" for f in fractions]
        for label in labels
    ]
    images = [plots["learning_curves"]] if "learning_curves" in plots else []
    return {"title": "Learning curves", "tables": [(header, body)], "images": images}


def _change(v: dict[str, float]) -> str:
    return "-" if v.get("before") is None else f"{100 * (v['after'] - v['before']):+.1f}"


def _stale_section(at_full: list[Row]) -> dict[str, Any] | None:
    body = [
        [f"`{r.label}`", f"`{t}`", pct(v.get("before")), pct(v.get("after")), _change(v)]
        for r in at_full
        for t, v in r.stale.items()
    ]
    if not body:
        return None
    return {
        "title": "Heads left on a moved backbone",
        "paragraphs": [
            f"Heads trained on the frozen backbone (`{at_full[0].stale_from or '-'}` runs), evaluated "
            "unchanged on each fine-tuned backbone: how a head that is not retrained fares as the features "
            "move (a negative change is accuracy lost)."
        ],
        "tables": [(["backbone from", "task", "accuracy before", "accuracy after", "change"], body)],
    }


def _sts_section(payload: dict[str, Any], at_full: list[Row]) -> dict[str, Any] | None:
    enc = payload["encoders"]
    if enc.get("sts_base") is None:
        return None
    body = [["original backbone", f"{100 * enc['sts_base']:.1f}"]] + [
        [f"`{r.label}`", "-" if r.sts is None else f"{100 * r.sts:.1f}"] for r in at_full
    ]
    return {"title": "General similarity (STS) before and after", "tables": [(["encoder", "Spearman x100"], body)]}


def _pooling_section(payload: dict[str, Any], tasks: list[str]) -> dict[str, Any] | None:
    probes = pooling_rows(payload)
    if not probes:
        return None
    by_pooling = payload["encoders"].get("sts_by_pooling")
    header = ["pooling", f"linear probe {payload['metric']}"] + [f"{t} acc" for t in tasks]
    header += ["STS Spearman x100"] if by_pooling else []
    body = []
    for pooling, primary, accs in probes:
        line = [f"`{pooling}`", pct(primary)] + [pct(accs.get(t)) for t in tasks]
        if by_pooling:
            line.append(f"{100 * by_pooling.get(pooling, float('nan')):.1f}")
        body.append(line)
    return {"title": "Pooling", "tables": [(header, body)]}


def write_report(payload: dict[str, Any], output: Path, title: str = "mtst strategy report") -> dict[str, Path]:
    """``report.md``, ``report.html`` and ``plots/*.png`` from the sweep's figures."""
    rows = summarize(payload)
    from mtst.compare.plots import make_plots  # matplotlib only when a report is written
    from mtst.compare.render import render_html, render_markdown

    plots = make_plots(payload, rows, output / "plots")
    sections = build_sections(payload, rows, plots)
    md = output / "report.md"
    md.write_text(render_markdown(sections, output, title) + "\n", encoding="utf-8")
    page = output / "report.html"
    page.write_text(render_html(sections, title) + "\n", encoding="utf-8")
    return {"markdown": md, "html": page, **plots}

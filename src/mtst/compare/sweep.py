"""``mtst compare``: run several strategies on the user's data and measure them side by side.

Each run is a normal ``mtst train`` in its own process (so its peak memory is
its own), in ``REPORT_DIR/runs/<name>``, with the same data, evaluation and
budget rules; frozen-backbone runs share one pooled-embedding cache. A run
whose ``metrics.json`` exists for the same settings is not repeated, so an
interrupted sweep resumes. After the runs, the encoders are compared with the
original backbone (representation drift, similarity forgetting, heads left
on a moved backbone), and :mod:`mtst.compare.report` writes the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from mtst.config import AUTO, POOLING_MODES, RunConfig, validate_config
from mtst.errors import ConfigError, MtstError
from mtst.evaluate import headline, read_sts, sts_spearman
from mtst.extras import require
from mtst.fileio import atomic_write_text, dir_mb
from mtst.training.planning.strategies import REGISTRY

ANCHORS = tuple(name for name, s in REGISTRY.items() if s.backbone_fixed)  # heads on the original features, best first


@dataclass(frozen=True)
class RunSpec:
    """One training run of the sweep."""

    label: str
    overrides: dict[str, Any]
    seed: int
    fraction: float
    pooling: str | None = None

    @property
    def name(self) -> str:
        pool = f"-pool_{self.pooling}" if self.pooling else ""
        return f"{self.label.replace(':', '')}-f{self.fraction:g}-s{self.seed}{pool}"


@dataclass
class RunResult:
    spec: RunSpec
    metrics: dict[str, Any]
    wall_seconds: float
    model_mb: float
    extra: dict[str, Any] = field(default_factory=dict)


def parse_strategies(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``auto,frozen,heads,top_k:2,gradual,full,lora:16`` -> (label, training overrides) pairs.

    ``auto`` is the default recipe: each run chooses its strategy from its own data (fraction).
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for raw in (x.strip() for x in text.split(",")):
        if not raw:
            continue
        name, _, arg = raw.partition(":")
        if name not in REGISTRY and name != AUTO:
            raise ConfigError(f"--strategies: unknown {name!r}; allowed: {AUTO}, {', '.join(REGISTRY)}")
        strategy = REGISTRY.get(name)
        overrides: dict[str, Any] = {"strategy": name}
        if arg:
            if not arg.isdigit() or int(arg) < 1 or strategy is None or strategy.compare_arg is None:
                takes = " and ".join(f"{s.name}:{s.compare_arg}" for s in REGISTRY.values() if s.compare_arg)
                raise ConfigError(f"--strategies: {raw!r}; only {takes} take a positive number")
            overrides.update(strategy.compare_overrides(int(arg)))
        if any(label == raw for label, _ in out):
            raise ConfigError(f"--strategies: {raw!r} is listed twice")
        out.append((raw, overrides))
    if not out:
        raise ConfigError("--strategies: name at least one strategy")
    return out


def parse_numbers(text: str, option: str, low: float, high: float) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not low < v <= high]
    if not values or bad:
        raise ConfigError(f"{option}: values must be in ({low:g}, {high:g}], got {text!r}")
    return values


def plan_runs(
    strategies: Sequence[tuple[str, dict[str, Any]]],
    seeds: Sequence[int],
    fractions: Sequence[float],
    poolings: Sequence[str] = (),
) -> list[RunSpec]:
    """Every (strategy, fraction, seed) run, then one linear probe (``frozen``) per extra pooling."""
    runs = [
        RunSpec(label, overrides, seed, fraction)
        for fraction in sorted(fractions)
        for label, overrides in strategies
        for seed in seeds
    ]
    runs += [RunSpec("frozen", {"strategy": "frozen"}, seeds[0], 1.0, pooling) for pooling in poolings]
    return runs


def run_config(base: dict[str, Any], spec: RunSpec, run_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """The base config with this run's strategy, seed, fraction, pooling and directories."""
    raw = json.loads(json.dumps(base))
    training = raw.setdefault("training", {})
    for key, value in json.loads(json.dumps(spec.overrides)).items():
        training[key] = {**training.get(key, {}), **value} if isinstance(value, dict) else value
    training["seed"] = spec.seed
    training["cache"] = {**training.get("cache", {}), "dir": str(cache_dir)}
    raw.setdefault("data", {})["train_fraction"] = spec.fraction
    if spec.pooling:
        raw.setdefault("model", {})["pooling"] = spec.pooling
    raw["output_dir"] = str(run_dir)
    return raw


def execute(
    raw: dict[str, Any], run_dir: Path, on_progress: Callable[[dict[str, Any]], None] | None = None
) -> tuple[dict[str, Any], float]:
    """Train one run in a child process; its output goes to ``run_dir/output.log``, and ``on_progress``
    hears the position of its progress bar (contrastive stage, steps) about twice a second."""
    from mtst.report import PROGRESS_FILE_ENV, read_progress

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    progress_file = run_dir / "progress.json"
    progress_file.unlink(missing_ok=True)
    started = time.perf_counter()
    with (run_dir / "output.log").open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mtst", "train", str(cfg_path), "--quiet", "--overwrite"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, PROGRESS_FILE_ENV: str(progress_file)},
        )
        try:
            while on_progress is not None:
                done = proc.poll() is not None
                record = read_progress(progress_file)
                if record:
                    on_progress(record)
                if done:
                    break
                time.sleep(0.5)
            proc.wait()
        except BaseException:  # Ctrl-C on the sweep stops its child too
            proc.terminate()
            proc.wait()
            raise
    progress_file.unlink(missing_ok=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (run_dir / "output.log").read_text(encoding="utf-8").strip().splitlines()[-5:]
        raise MtstError(f"run {run_dir.name} failed (exit {proc.returncode}):\n  " + "\n  ".join(tail))
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")), wall


def finished(run_dir: Path, raw: dict[str, Any]) -> dict[str, Any] | None:
    """A finished run's record when it was made with the same settings (resume), else None."""
    record = run_dir / "compare_run.json"
    if not record.exists():
        return None
    saved = json.loads(record.read_text(encoding="utf-8"))
    return saved if saved.get("config") == raw else None


@dataclass
class Sweep:
    """Everything ``mtst compare`` was asked for."""

    config: RunConfig
    base: dict[str, Any]
    strategies: list[tuple[str, dict[str, Any]]]
    seeds: list[int]
    fractions: list[float]
    poolings: list[str]
    sts: Path | None
    output: Path

    def runs(self) -> list[RunSpec]:
        return plan_runs(self.strategies, self.seeds, self.fractions, self.poolings)


@dataclass
class RunFailure:
    """A run of the sweep that did not finish, and why."""

    spec: RunSpec
    error: str


def run_sweep(sweep: Sweep, console: Console, show_progress: bool = True) -> tuple[list[RunResult], list[RunFailure]]:
    """Train every run not already finished: one bar over the sweep and one for the run in progress.

    A run that fails is recorded with its error and the sweep goes on, so the others still count.
    """
    from mtst.report import progress_bar

    runs = sweep.runs()
    cache_dir = sweep.output / "cache"
    results: list[RunResult] = []
    failures: list[RunFailure] = []
    progress = progress_bar(console, not show_progress)
    with progress:
        bar = progress.add_task("", total=len(runs))
        inner = progress.add_task("", total=None, visible=False)

        def show_inner(record: dict[str, Any]) -> None:
            description = f"  └ {record.get('description') or 'starting'}"
            progress.update(
                inner,
                description=description,
                completed=record.get("completed", 0),
                total=record.get("total"),
                visible=True,
            )

        for spec in runs:
            run_dir = sweep.output / "runs" / spec.name
            raw = run_config(sweep.base, spec, run_dir, cache_dir)
            progress.update(bar, description=f"compare {spec.name}")
            progress.update(inner, description="  └ starting", completed=0, total=None, visible=show_progress)
            record = finished(run_dir, raw)
            if record is None:
                try:
                    metrics, wall = execute(raw, run_dir, show_inner)
                except MtstError as exc:
                    failures.append(RunFailure(spec, str(exc)))
                    log = escape(str(run_dir / "output.log"))
                    console.print(f"[red]run {escape(spec.name)} failed[/red]; the sweep goes on (see {log})")
                    progress.advance(bar)
                    continue
                record = {"config": raw, "metrics": metrics, "wall_seconds": wall}
                (run_dir / "compare_run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            else:
                console.print(f"reusing finished run {spec.name}", highlight=False, markup=False)
            results.append(RunResult(spec, record["metrics"], record["wall_seconds"], dir_mb(run_dir / "model")))
            progress.advance(bar)
        progress.update(inner, visible=False)
    return results, failures


# ------------------------------------------------------------------ encoder comparisons
def eval_split_name(data: Any) -> str:
    return "test" if "test" in data.splits else ("validation" if "validation" in data.splits else "train")


def measure_encoders(sweep: Sweep, results: list[RunResult], console: Console) -> dict[str, Any]:
    """Drift, STS before/after, and frozen-run heads evaluated on each moved backbone."""
    from mtst.data import load_task_data
    from mtst.evaluate import evaluate_split, tokenize_split
    from mtst.modeling.model import MultiTaskModel, load_encoder

    data = load_task_data(sweep.config)
    split_name = eval_split_name(data)
    split = data.splits[split_name]
    texts = (data.splits.get("validation") or split).texts
    m = sweep.config.model
    base = load_encoder(m.backbone, pooling=m.pooling, normalize=m.normalize)
    if m.max_length:
        base.max_length = m.max_length
    base_emb = base.encode(texts, normalize=True, convert_to="torch")
    pairs = read_sts(sweep.sts) if sweep.sts else None
    out: dict[str, Any] = {"drift_texts": len(texts), "stale_split": split_name}
    if pairs:
        out["sts_base"] = sts_spearman(base, pairs)
    # Heads trained on the unmoved backbone (frozen or heads runs), re-used on each moved one.
    anchors: dict[tuple[int, float], RunResult] = {}
    for label in reversed(ANCHORS):
        anchors.update(
            {(r.spec.seed, r.spec.fraction): r for r in results if r.spec.label == label and r.spec.pooling is None}
        )
    before: dict[str, dict[str, float]] = {}
    with console.status("measuring drift"):
        for r in results:
            if r.spec.pooling is not None:
                continue
            model = MultiTaskModel.load(sweep.output / "runs" / r.spec.name)
            emb = model.encoder.encode(texts, normalize=True, convert_to="torch")
            r.extra["drift"] = round(max(0.0, 1.0 - float((emb * base_emb).sum(-1).mean())), 6)
            if pairs:
                r.extra["sts"] = sts_spearman(model.encoder, pairs)
            anchor = anchors.get((r.spec.seed, r.spec.fraction))
            if anchor is None or r.spec.label in ANCHORS:
                continue
            heads = MultiTaskModel.load(sweep.output / "runs" / anchor.spec.name)
            ids, word_ids = tokenize_split(heads, split)
            if anchor.spec.name not in before:
                scores = evaluate_split(heads, split, ids, word_ids=word_ids)
                before[anchor.spec.name] = {t: headline(m_) for t, m_ in scores.items()}
            heads.encoder = model.encoder
            moved = evaluate_split(heads, split, ids, word_ids=word_ids)
            r.extra["stale_heads"] = {
                "from": anchor.spec.label,
                "tasks": {
                    t: {"before": before[anchor.spec.name].get(t), "after": headline(m_)} for t, m_ in moved.items()
                },
            }
    if sweep.poolings and pairs:
        out["sts_by_pooling"] = {}
        for pooling in sweep.poolings:
            base.pooling = pooling
            out["sts_by_pooling"][pooling] = sts_spearman(base, pairs)
    return out


def save_results(
    sweep: Sweep, results: list[RunResult], encoders: dict[str, Any], failures: Sequence[RunFailure] = ()
) -> dict[str, Any]:
    """Every figure of the sweep, as written to ``results.json`` (with the runs that failed, and why)."""
    payload = {
        "config": sweep.base,
        "strategies": [label for label, _ in sweep.strategies],
        "seeds": sweep.seeds,
        "fractions": sweep.fractions,
        "poolings": sweep.poolings,
        "metric": sweep.config.training.metric,
        "encoders": encoders,
        "runs": [
            {
                **asdict(r.spec),
                "name": r.spec.name,
                "wall_seconds": r.wall_seconds,
                "model_mb": r.model_mb,
                **r.extra,
                "metrics": r.metrics,
            }
            for r in results
        ],
        "failed": [{**asdict(f.spec), "name": f.spec.name, "error": f.error} for f in failures],
    }
    sweep.output.mkdir(parents=True, exist_ok=True)
    remove_report(sweep.output)  # an earlier sweep's report must not outlive the results it described
    atomic_write_text(sweep.output / "results.json", json.dumps(payload, indent=2) + "\n")
    return payload


REPORT_FILES = ("report.md", "report.html")


def remove_report(output: Path) -> None:
    """Remove the report (``report.md``, ``report.html``, ``plots/*.png``) an earlier sweep left in ``output``."""
    for name in REPORT_FILES:
        (output / name).unlink(missing_ok=True)
    plots = output / "plots"
    if plots.is_dir():
        for png in plots.glob("*.png"):
            png.unlink()
        if not any(plots.iterdir()):
            plots.rmdir()


def load_sweep(
    config_path: Path | None,
    overrides: list[str],
    strategies: str,
    seeds: int,
    fractions: str,
    poolings: str | None,
    sts: Path | None,
    output: Path,
) -> Sweep:
    """Validate every option before the first run starts."""
    from mtst.config import load_config

    require("plots", "mtst compare (its report's plots)")
    config = load_config(config_path, overrides)
    if seeds < 1:
        raise ConfigError("--seeds: at least 1")
    pool_list = [p.strip() for p in (poolings or "").split(",") if p.strip()]
    bad = [p for p in pool_list if p not in POOLING_MODES]
    if bad:
        raise ConfigError(f"--poolings: unknown {', '.join(bad)}; allowed: {', '.join(POOLING_MODES)}")
    if sts is not None and not sts.exists():
        raise ConfigError(f"--sts {sts}: no such file")
    base = config.model_dump(mode="json", exclude_defaults=False)
    parsed = parse_strategies(strategies)
    return Sweep(
        config=config,
        base=validate_config(base).model_dump(mode="json"),
        strategies=parsed,
        seeds=[config.training.seed + i for i in range(seeds)],
        fractions=parse_numbers(fractions, "--train-fractions", 0.0, 1.0),
        poolings=pool_list,
        sts=sts,
        output=output,
    )

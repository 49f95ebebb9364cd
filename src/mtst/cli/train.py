"""``mtst train`` and ``mtst compare``: runs and sweeps of runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mtst.cli.app import (
    app,
    console,
    err_console,
)
from mtst.errors import MtstError
from mtst.training.planning.strategies import help_text as strategy_help


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config; default: the bundled demo.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: a.b=value.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory from its checkpoint.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also print the whole resolved config (always in config.yaml).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run already in the output directory.")
    ] = False,
) -> None:
    """Fine-tune a multi-task model (with no CONFIG: the bundled product-review demo)."""
    from mtst.config import apply_overrides, dump_config, load_config, validate_config
    from mtst.report import metrics_table, retention_table
    from mtst.training.runtime.rundir import resume_config
    from mtst.training.state import TrainingInterrupted
    from mtst.training.trainer import train as run_training

    if resume is not None:
        if config is not None:
            raise MtstError("give either a CONFIG or --resume RUN_DIR, not both")
        if overwrite:
            raise MtstError("--resume continues the run in RUN_DIR; --overwrite would replace it: give one of them")
        cfg = resume_config(resume)
        if set_:
            cfg = validate_config(apply_overrides(cfg.model_dump(mode="json"), set_), str(resume / "config.yaml"))
    else:
        cfg = load_config(config, set_ or [])
    if output_dir is not None and resume is None:
        cfg.output_dir = str(output_dir)
    if verbose and int(os.environ.get("RANK", "0")) == 0:
        err_console.rule("resolved config")
        err_console.print(dump_config(cfg).rstrip(), highlight=False, markup=False)
        err_console.rule()
    try:
        result = run_training(
            cfg, resume=resume is not None, console=err_console, show_progress=not quiet, overwrite=overwrite
        )
    except TrainingInterrupted as exc:  # Ctrl-C: where it stopped and how to continue (exit 130, as a shell does)
        err_console.print(f"[bold yellow]{escape(str(exc))}[/bold yellow]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch, process 0 reports
        return
    if result.validation:
        err_console.print(f"best validation {cfg.training.metric}: {100 * result.validation[cfg.training.metric]:.1f}")
    if result.test:
        console.print(metrics_table(result.test, f"test metrics · {result.strategy} · {result.run_dir}"))
    else:
        console.print(f"no test split; model and metrics are in {result.run_dir}", markup=False)
    kept = retention_table(result.retention)
    if kept is not None:
        console.print(kept)
    err_console.print(
        f"{', '.join(result.stages)}, {result.train_seconds:.0f} s · model: {result.run_dir / 'model'} · "
        f"metrics: {result.run_dir / 'metrics.json'}",
        highlight=False,
    )


@app.command()
def compare(
    config: Annotated[Path | None, typer.Argument(help="YAML config; default: the bundled demo.")] = None,
    strategies: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated, a number after ':' where one is taken. auto: the default recipe, "
            f"chosen from the data; {strategy_help()}",
        ),
    ] = "frozen,heads,top_k:2,gradual,full",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per strategy (training.seed, +1, ...).")] = 1,
    train_fractions: Annotated[str, typer.Option(help="Learning curve: fractions of the training rows.")] = "1.0",
    poolings: Annotated[str | None, typer.Option(help="Linear probe per pooling, e.g. cls,mean,max.")] = None,
    sts: Annotated[Path | None, typer.Option(help="Pairs file (sentence1, sentence2, score) for STS.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report directory.")] = Path("runs/compare"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: a.b=value.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run strategies side by side on your data and write a report that recommends one."""
    from mtst.compare.report import recommend, write_report
    from mtst.compare.summary import strategy_table, summarize
    from mtst.compare.sweep import load_sweep, measure_encoders, run_sweep, save_results

    sweep = load_sweep(config, set_ or [], strategies, seeds, train_fractions, poolings, sts, output)
    runs = sweep.runs()
    err_console.print(f"[bold]mtst compare[/bold] · {len(runs)} runs · report in {escape(str(output))}")
    results, failures = run_sweep(sweep, err_console, show_progress=not quiet)
    if not results:
        save_results(sweep, results, {}, failures)
        reasons = "; ".join(f"{f.spec.name}: {' '.join(f.error.split())[:200]}" for f in failures)
        raise MtstError(f"every run of the sweep failed ({reasons}); details in {output / 'results.json'}")
    encoders = measure_encoders(sweep, results, err_console)
    payload = save_results(sweep, results, encoders, failures)
    written = write_report(payload, output)
    rows = summarize(payload)
    table = strategy_table(rows, sweep.config.training.metric)
    console.print(table)
    for sentence in recommend(payload, rows):
        console.print(sentence.replace("**", "").replace("`", ""), highlight=False)
    err_console.print(f"wrote {written['markdown']}, {written['html']} and {output / 'results.json'}", markup=False)
    if failures:
        names = ", ".join(f.spec.name for f in failures)
        err_console.print(
            f"[bold red]error:[/bold red] {len(failures)} of {len(runs)} runs failed ({names}); the report covers "
            f"the others and lists the failures",
            highlight=False,
        )
        raise typer.Exit(1)

"""The bundled demo (two tasks, 425 rows) under the default recipe and under ``full``, over seeds.

What a newcomer's first command trains, against the strategy ``mtst compare`` recommends on the
same data: per-task test accuracy and macro-F1, training seconds, and the strategy ``auto`` chose.
Results go to ``results/demo_recipe.json``; ``--table`` prints them.

    python benchmarks/demo_recipe.py --seeds 42,43,44
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # what `import mtst` sets (mtst/threads.py); torch loads first here

from _common import ROOT, machine
from fewshot import load_results, save_result
from mtst.config import load_config
from mtst.training.trainer import train

RESULTS = ROOT / "benchmarks" / "results" / "demo_recipe.json"
STRATEGIES = ("auto", "full")


def run(strategy: str, seed: int, workdir: Path) -> dict:
    overrides = [f"training.seed={seed}", f"output_dir={workdir / f'{strategy}-{seed}'}"]
    if strategy != "auto":
        overrides.append(f"training.strategy={strategy}")
    started = time.perf_counter()
    result = train(load_config(None, overrides), show_progress=False, overwrite=True)
    return {
        "strategy": strategy,
        "chosen": result.strategy,
        "stages": list(result.stages),
        "seed": seed,
        "wall_s": round(time.perf_counter() - started, 1),
        "train_s": round(result.train_seconds, 1),
        "test": {task: {k: m[k] for k in ("accuracy", "macro_f1")} for task, m in result.test.items()},
        "machine": machine(),
    }


def table(results: list[dict]) -> str:
    tasks = sorted({t for r in results for t in r["test"]})
    lines = [
        "| strategy | seeds | " + " | ".join(f"{t} acc / F1" for t in tasks) + " | train s |",
        "|---" * (3 + len(tasks)) + "|",
    ]
    for strategy in STRATEGIES:
        rows = [r for r in results if r["strategy"] == strategy]
        if not rows:
            continue
        cells = []
        for t in tasks:
            acc = statistics.mean(100 * r["test"][t]["accuracy"] for r in rows)
            f1 = statistics.mean(100 * r["test"][t]["macro_f1"] for r in rows)
            cells.append(f"{acc:.1f} / {f1:.1f}")
        seconds = statistics.mean(r["train_s"] for r in rows)
        label = f"{strategy} ({rows[0]['chosen']})" if strategy == "auto" else strategy
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = parser.parse_args()
    if args.table:
        print(table(load_results(RESULTS)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            for strategy in args.strategies.split(","):
                entry = run(strategy, seed, Path(tmp))
                save_result(RESULTS, entry)
                print(entry["strategy"], entry["seed"], entry["test"], f"{entry['train_s']} s", flush=True)
    print(table(load_results(RESULTS)))


if __name__ == "__main__":
    main()

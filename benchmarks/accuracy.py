"""Accuracy per strategy on real data, next to a plain fine-tuning reference.

SST-2 (a fixed, seeded subset of train rows; dev for model selection; the
binary test split for scoring) and TREC coarse (train; test). One run per
strategy through the public training API, plus a plain reference recipe
(``full``, one LR 5e-5 for everything, 3 epochs, batch 32, 10% warm-up then
linear decay, no layer decay) and mtst's default recipe. Prints accuracy,
macro-F1, train time and trainable parameters, and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from _common import DATA, machine, peak_rss_mb, read_jsonl
from mtst.config import validate_config
from mtst.fileio import dir_mb
from mtst.training.trainer import train

REFERENCE = {
    "strategy": "full",
    "lr_backbone": 5e-5,
    "lr_head": 5e-5,
    "layer_decay": 1.0,
    "epochs": 3,
    "batch_size": 32,
    "warmup_ratio": 0.1,
    "schedule": "linear",
}
RECIPES: dict[str, dict] = {
    "reference (plain full FT)": REFERENCE,
    "default": {},
    "heads": {"strategy": "heads"},
    "top_k (k=2)": {"strategy": "top_k", "top_k": 2},
    "gradual": {"strategy": "gradual"},
    "full": {"strategy": "full"},
    "lora r8": {"strategy": "lora", "lora": {"r": 8, "alpha": 16}},
    "lora r16": {"strategy": "lora", "lora": {"r": 16, "alpha": 32}},
}


def dataset_sources(name: str, train_rows: int, workdir: Path) -> tuple[dict, dict]:
    """Data section and tasks section for one benchmark dataset."""
    if name == "sst2":
        rows = read_jsonl(DATA / "sst2" / "train.jsonl")
        random.Random(0).shuffle(rows)
        subset = workdir / "sst2_train.jsonl"
        subset.write_text("".join(json.dumps(r) + "\n" for r in rows[:train_rows]))
        data = {
            "train": str(subset),
            "validation": str(DATA / "sst2" / "dev.jsonl"),
            "test": str(DATA / "sst2" / "test.jsonl"),
        }
        return data, {"sentiment": {}}
    if name == "trec":
        return {"train": str(DATA / "trec" / "train.jsonl"), "test": str(DATA / "trec" / "test.jsonl")}, {"coarse": {}}
    raise SystemExit(f"unknown dataset {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="sst2,trec")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names from RECIPES")
    parser.add_argument("--extra", default="{}", help='more recipes as JSON: {"name": {"lr_backbone": 1e-4}}')
    parser.add_argument("--seeds", default="42", help="comma-separated seeds; mean and std are printed")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/accuracy.json"))
    args = parser.parse_args()
    console = Console()
    RECIPES.update(json.loads(args.extra))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for dataset in args.datasets.split(","):
            data, tasks = dataset_sources(dataset, args.train_rows, workdir)
            table = Table(title=f"{dataset} · {machine()}")
            for col in ("recipe", "accuracy", "macro-F1", "train s", "trainable params", "model MB", "steps"):
                table.add_column(col, justify="left" if col == "recipe" else "right")
            for recipe in args.recipes.split(","):
                scores = []
                for seed in [int(x) for x in args.seeds.split(",")]:
                    training = {**RECIPES[recipe], "seed": seed}
                    cfg = validate_config(
                        {
                            "tasks": tasks,
                            "data": data,
                            "training": training,
                            "output_dir": str(workdir / f"{dataset}-{recipe.replace(' ', '_')}-{seed}"),
                        }
                    )
                    start = time.perf_counter()
                    result = train(cfg, show_progress=False, console=Console(quiet=True))
                    wall = time.perf_counter() - start
                    m = result.test[next(iter(tasks))]
                    size = dir_mb(result.run_dir / "model")
                    scores.append((m["accuracy"], m["macro_f1"], result.train_seconds))
                    results.append(
                        {
                            "dataset": dataset,
                            "recipe": recipe,
                            "seed": seed,
                            "accuracy": m["accuracy"],
                            "macro_f1": m["macro_f1"],
                            "train_seconds": result.train_seconds,
                            "wall_seconds": wall,
                            "trainable_parameters": result.trainable_parameters,
                            "steps": result.steps,
                            "model_mb": size,
                            "config": cfg.training.model_dump(mode="json"),
                        }
                    )
                    console.print(
                        f"done {dataset} / {recipe} / seed {seed}: acc {100 * m['accuracy']:.2f} in {wall:.0f}s"
                    )
                acc, f1, secs = (np.array(x) for x in zip(*scores, strict=True))
                spread = f" ± {100 * acc.std():.2f}" if len(acc) > 1 else ""
                table.add_row(
                    recipe,
                    f"{100 * acc.mean():.2f}{spread}",
                    f"{100 * f1.mean():.2f}",
                    f"{secs.mean():.0f}",
                    f"{result.trainable_parameters:,}",
                    f"{size:.1f}",
                    f"{result.steps}",
                )
            console.print(table)
    console.print(f"peak RSS {peak_rss_mb():.0f} MB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

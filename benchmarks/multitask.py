"""Multi-task transfer: one shared model against one model per task, on the same rows and seeds.

Pairs (the real cases of the issue tracker):

- ``trec``: TREC ``coarse`` (6 classes) and ``fine`` (50 classes) on the same questions;
- ``sst2_trec``: SST-2 sentiment rows and TREC coarse rows in one training file, each row
  labelled for its own task only (the other label missing);
- ``sst5``: SST-5 ``grade`` (5 classes) and ``polarity`` (negative: grades 0-1, neutral: 2,
  positive: 3-4) on the same sentences, sampled by grade: every row carries both labels, as the
  bundled demo's do.

Sizes: examples per class of each task's sampled labels (SetFit's ``sample_dataset``; for
``trec`` the sample is drawn by ``coarse`` and keeps its ``fine`` labels), or 0 for the whole
training set (SST-2 capped as in ``fewshot.py``). Methods: ``shared`` (one ``mtst train`` with
both tasks) and ``single`` (one run per task; its time is the sum). Both take the same
``--mtst-set`` overrides, so a setting is judged by the shared model against the single ones
under it. Results go to ``results/multitask.json``; ``--table`` prints them.

    python benchmarks/multitask.py --pairs trec,sst2_trec --sizes 8 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # what `import mtst` sets (mtst/threads.py); torch loads first here

import torch

from _common import DATA, ROOT, machine, read_jsonl
from fewshot import FULL_CAP, full_rows, sample, save_result, size_name

PAIRS = {"trec": ("coarse", "fine"), "sst2_trec": ("sentiment", "coarse"), "sst5": ("grade", "polarity")}
POLARITY = ("negative", "negative", "neutral", "positive", "positive")  # of SST-5's grades 0-4
RESULTS = ROOT / "benchmarks" / "results" / "multitask.json"
METHODS = ("shared", "single")


def _labelled(rows: list[dict], text_key: str, labels: dict[str, str]) -> list[dict]:
    """Rows as mtst reads them: ``text`` and one column per task (None where a row has no label)."""
    return [
        {"text": r[text_key], **{task: (str(r[col]) if col in r else None) for task, col in labels.items()}}
        for r in rows
    ]


def pair_data(pair: str, size: int, seed: int, cap: int) -> tuple[list[dict], list[dict]]:
    """Training and test rows of ``pair`` with columns ``text`` and one per task."""
    if pair == "trec":
        rows = read_jsonl(DATA / "trec" / "train.jsonl")
        test = read_jsonl(DATA / "trec" / "test.jsonl")
        by_text = {r["text"]: r for r in rows}
        picked = full_rows(rows, "coarse", cap) if size == 0 else sample(rows, "coarse", size, seed)
        train = [by_text[r["text"]] for r in picked]
        return _labelled(train, "text", {"coarse": "coarse", "fine": "fine"}), _labelled(
            test, "text", {"coarse": "coarse", "fine": "fine"}
        )
    if pair == "sst5":

        def graded(rows: list[dict]) -> list[dict]:
            return [{"text": r["text"], "grade": str(r["label"]), "polarity": POLARITY[r["label"]]} for r in rows]

        rows = read_jsonl(DATA / "sst5" / "train.jsonl")
        picked = full_rows(rows, "label", cap) if size == 0 else sample(rows, "label", size, seed)
        return graded(picked), graded(read_jsonl(DATA / "sst5" / "test.jsonl"))
    sst, trec = (read_jsonl(DATA / d / "train.jsonl") for d in ("sst2", "trec"))
    train = []
    for rows, column in ((sst, "sentiment"), (trec, "coarse")):
        picked = full_rows(rows, column, cap) if size == 0 else sample(rows, column, size, seed)
        train += [{"text": r["text"], "sentiment": None, "coarse": None, column: str(r["label"])} for r in picked]
    test = [
        *(
            {"text": r["text"], "sentiment": str(r["sentiment"]), "coarse": None}
            for r in read_jsonl(DATA / "sst2" / "test.jsonl")
        ),
        *(
            {"text": r["text"], "sentiment": None, "coarse": str(r["coarse"])}
            for r in read_jsonl(DATA / "trec" / "test.jsonl")
        ),
    ]
    return train, test


def run(
    train: list[dict],
    test: list[dict],
    tasks: tuple[str, ...],
    seed: int,
    work: Path,
    overrides: dict,
    callbacks: Sequence[Any] = (),
) -> tuple[dict[str, float], float]:
    """One ``mtst train`` on ``tasks``: test accuracy per task, training seconds."""
    from mtst.config import validate_config
    from mtst.training.trainer import train as mtst_train

    for name, rows in (("train", train), ("test", test)):
        keep = [r for r in rows if any(r.get(t) is not None for t in tasks)]
        with (work / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": r["text"], **{t: r.get(t) for t in tasks}}) + "\n" for r in keep)
    # every label the test set holds is declared, so a small sample that misses a class still runs
    labels = {t: sorted({r[t] for r in (*train, *test) if r.get(t) is not None}) for t in tasks}
    raw = {
        "tasks": {t: {"labels": labels[t]} for t in tasks},
        "data": {"train": str(work / "train.jsonl"), "test": str(work / "test.jsonl")},
        "training": {"seed": seed, **overrides},
        "output_dir": str(work / "run"),
    }
    result = mtst_train(validate_config(raw), callbacks=callbacks, show_progress=False, overwrite=True)
    return {t: 100 * result.test[t]["accuracy"] for t in tasks}, result.train_seconds


def table(results: list[dict], tag: str | None = None) -> str:
    """Markdown: per pair and size, each task's accuracy (mean +- std) shared vs single, and seconds."""
    from collections import defaultdict

    cells: dict[tuple[str, int, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if tag is None or r.get("tag") == tag:
            cells[(r["pair"], r["size"], r.get("tag", ""))][r["method"]].append(r)
    lines = ["| pair | task | shared | single | shared - single (paired) |", "|---|---|---:|---:|---:|"]
    for (pair, size, variant), by_method in sorted(
        cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 10**9, kv[0][2])
    ):
        shared = {r["seed"]: r for r in by_method.get("shared", [])}
        single = {r["seed"]: r for r in by_method.get("single", [])}
        for task in PAIRS[pair]:
            row = [f"{pair} {size_name(size)}" + (f" ({variant})" if variant else ""), task]
            for runs in (shared, single):
                acc = [r["accuracy"][task] for r in runs.values()]
                secs = statistics.mean(r["seconds"] for r in runs.values()) if runs else 0
                sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
                row.append(f"{statistics.mean(acc):.1f} ± {sd:.1f} ({secs:.0f} s, n={len(acc)})" if acc else "")
            both = sorted(set(shared) & set(single))
            diff = [shared[s]["accuracy"][task] - single[s]["accuracy"][task] for s in both]
            row.append(f"{statistics.mean(diff):+.2f} (n={len(diff)})" if diff else "")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--sizes", default="8", help="examples per class, e.g. 8,64; 0: full")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--mtst-set", default="{}", help="JSON of training overrides for every run")
    parser.add_argument("--tag", default="")
    parser.add_argument("--full-cap", type=int, default=FULL_CAP)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text()) if out.exists() else [], args.tag or None))
        return
    torch.set_num_threads(args.threads)
    print(machine())
    overrides = json.loads(args.mtst_set)
    for pair in args.pairs.split(","):
        tasks = PAIRS[pair]
        for size in (int(s) for s in args.sizes.split(",")):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                train, test = pair_data(pair, size, seed, args.full_cap)
                for method in args.methods.split(","):
                    groups = [tasks] if method == "shared" else [(t,) for t in tasks]
                    accuracy, seconds = {}, 0.0
                    for group in groups:
                        with tempfile.TemporaryDirectory() as tmp:
                            torch.manual_seed(seed)
                            acc, secs = run(train, test, group, seed, Path(tmp), overrides)
                        accuracy.update(acc)
                        seconds += secs
                    entry = {
                        "pair": pair,
                        "size": size,
                        "seed": seed,
                        "method": method,
                        "accuracy": accuracy,
                        "seconds": round(seconds, 2),
                        "tag": args.tag,
                        "mtst_set": args.mtst_set,
                    }
                    save_result(out, entry)
                    shown = ", ".join(f"{t} {a:.1f}" for t, a in accuracy.items())
                    print(f"{pair} {size_name(size)} seed {seed} {method}: {shown} in {seconds:.0f}s", flush=True)
    print(table(json.loads(out.read_text()), args.tag or None))


if __name__ == "__main__":
    main()

"""What training keeps of what a model knows: old heads and the sentence embedding, as a user runs it.

Every run is a whole ``mtst train`` process (the public CLI) on files written from ``../shared/data``;
figures come from the run's ``metrics.json`` (test metrics, ``retention``, training seconds).

``sequential``: a TREC coarse model is trained first (the default run on the whole training set); then
SST-2 sentiment is added from it (``model.init``, SST-2 rows only, 64 per class) under each
``training.keep.protect``, beside the single-task default on the same rows. The second run's test file
holds SST-2 test rows (``sentiment``) and TREC test rows (``coarse``), so its ``retention`` gives the
carried coarse head's test accuracy at the start and at the end.

``embedding``: default runs with the embedding term off and on (``training.keep.embedding``), STS-B
test Spearman of the saved model's embedding (``data.sts``) beside the task's test accuracy and the time.

Results go to ``results/retention.json`` (appended run by run); ``--table`` prints them.

    python benchmarks/retention.py sequential --seeds 42,43,44
    python benchmarks/retention.py embedding --sets sst2_4000,trec,banking77_8,banking77 --weights 0,0.3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # what `import mtst` sets (mtst/threads.py); torch loads first here

from _common import DATA, ROOT, read_jsonl

RESULTS = ROOT / "benchmarks" / "results" / "retention.json"
STS = DATA / "stsb" / "test.jsonl"
SETS = {  # name: (folder, label column, rows per class (0: all), cap on rows)
    "sst2_4000": ("sst2", "sentiment", 0, 4000),
    "trec": ("trec", "coarse", 0, None),
    "banking77_8": ("banking77", "intent", 8, None),
    "banking77": ("banking77", "intent", 0, None),
    "sst2_64": ("sst2", "sentiment", 64, None),
    "trec_64": ("trec", "coarse", 64, None),
}


def per_class(rows: list[dict], column: str, n: int, seed: int) -> list[dict]:
    """Shuffle with the seed, keep the first ``n`` rows of each class (SetFit's ``sample_dataset``)."""
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    taken: dict[str, int] = defaultdict(int)
    out = []
    for r in shuffled:
        if taken[r[column]] < n:
            taken[r[column]] += 1
            out.append(r)
    return out


def subset(name: str, seed: int) -> tuple[list[dict], list[dict], str]:
    folder, column, n, cap = SETS[name]
    train = read_jsonl(DATA / folder / "train.jsonl")
    if n:
        train = per_class(train, column, n, seed)
    elif cap and len(train) > cap:
        train = random.Random(seed).sample(train, cap)
    return train, read_jsonl(DATA / folder / "test.jsonl"), column


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def mtst_train(config: dict, run: Path, overrides: list[str] = ()) -> dict:
    """One ``mtst train`` process; its metrics.json with the wall time added."""
    import yaml

    run.parent.mkdir(parents=True, exist_ok=True)
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump({**config, "output_dir": str(run)}))
    started = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "mtst",
        "train",
        str(path),
        "-q",
        "--overwrite",
        *[arg for o in overrides for arg in ("--set", o)],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["wall_s"] = round(time.perf_counter() - started, 1)
    return metrics


def save(entry: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    results.append(entry)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(RESULTS)


def record(kind: str, name: str, seed: int, variant: str, metrics: dict, task: str) -> dict:
    kept = metrics.get("retention", {})
    entry = {
        "kind": kind,
        "set": name,
        "seed": seed,
        "variant": variant,
        "strategy": metrics["strategy"],
        "accuracy": metrics["test"].get(f"{task}/accuracy"),
        "cosine": kept.get("embedding", {}).get("cosine"),
        "sts": (kept.get("embedding", {}).get("sts") or {}).get("end"),
        "sts_start": (kept.get("embedding", {}).get("sts") or {}).get("start"),
        "carried": {t: m.get("test") for t, m in kept.get("tasks", {}).items()},
        "agreement": {t: m.get("agreement") for t, m in kept.get("tasks", {}).items()},
        "agreement_keep_texts": {
            t: m["keep_texts"]["agreement"] for t, m in kept.get("tasks", {}).items() if "keep_texts" in m
        },
        "train_s": metrics["train_seconds"],
        "wall_s": metrics["wall_s"],
    }
    save(entry)
    print(json.dumps(entry), flush=True)
    return entry


def embedding(sets: list[str], weights: list[float], seeds: list[int], work: Path) -> None:
    for name in sets:
        for seed in seeds:
            train, test, column = subset(name, seed)
            d = work / f"{name}-{seed}"
            d.mkdir(parents=True, exist_ok=True)
            config = {
                "tasks": {column: {}},
                "data": {
                    "train": write_jsonl(d / "train.jsonl", train),
                    "test": write_jsonl(d / "test.jsonl", test),
                    "sts": str(STS),
                },
                "training": {"seed": seed},
            }
            for w in weights:
                m = mtst_train(config, d / f"w{w}", [f"training.keep.embedding={w}"])
                record("embedding", name, seed, f"embedding={w}", m, column)


def sequential(
    seeds: list[int],
    work: Path,
    size: int = 64,
    start_embedding: float | None = None,
    protects: tuple[str, ...] = ("safe", "free", "distill"),
    keep_heads: float | None = None,
    keep_texts: int | None = None,
    tag: str = "",
) -> None:
    """``start_embedding``: the coarse model's own ``keep.embedding`` (None: the default, not held);
    ``keep_texts``: the second runs hold the coarse model on up to this many texts of its own training file
    (``keep.texts``, ``keep.texts_limit``; None: not)."""
    trec_train, trec_test, _ = subset("trec", 0)
    held = "" if start_embedding is None else f" (coarse model held x{start_embedding:g})"
    held += "" if keep_heads is None else f" (keep.heads {keep_heads:g})"
    held += "" if keep_texts is None else f" (keep.texts {keep_texts})"
    held += f" ({tag})" if tag else ""
    d = work / ("sequential" if start_embedding is None else f"sequential-held{start_embedding:g}")
    d.mkdir(parents=True, exist_ok=True)
    first = d / "coarse"
    if not (first / "metrics.json").exists():
        config = {
            "tasks": {"coarse": {}},
            "data": {
                "train": write_jsonl(
                    d / "trec_train.jsonl", [{"text": r["text"], "coarse": r["coarse"]} for r in trec_train]
                ),
                "test": write_jsonl(d / "trec_test.jsonl", trec_test),
                "sts": str(STS),
            },
            "training": {"keep": {"embedding": start_embedding}},
        }
        m = mtst_train(config, first)
        record("sequential", "trec->sst2", 0, "coarse model" + held, m, "coarse")
    before = json.loads((first / "metrics.json").read_text())["test"]["coarse/accuracy"]
    sst_test = read_jsonl(DATA / "sst2" / "test.jsonl")
    mixed_test = write_jsonl(
        d / "mixed_test.jsonl",
        [{"text": r["text"], "sentiment": r["sentiment"]} for r in sst_test]
        + [{"text": r["text"], "coarse": r["coarse"]} for r in trec_test],
    )
    for seed in seeds:
        train = per_class(read_jsonl(DATA / "sst2" / "train.jsonl"), "sentiment", size, seed)
        rows = write_jsonl(d / f"sst2_{seed}.jsonl", train)
        base = {
            "tasks": {"sentiment": {}},
            "data": {"train": rows, "test": mixed_test, "sts": str(STS)},
            "training": {"seed": seed},
        }
        if start_embedding is None and keep_heads is None and not held:  # the single-task reference, once
            m = mtst_train(base, d / f"single-{seed}")
            record("sequential", "trec->sst2", seed, "sentiment alone", m, "sentiment")
        for protect in protects:
            keep: dict = {"protect": protect} if keep_heads is None else {"protect": protect, "heads": keep_heads}
            if keep_texts is not None:
                keep.update(texts=str(d / "trec_train.jsonl"), texts_limit=keep_texts)
            config = {**base, "model": {"init": str(first)}, "training": {"seed": seed, "keep": keep}}
            m = mtst_train(config, d / f"{protect}{held.replace(' ', '_')}-{seed}")
            entry = record("sequential", "trec->sst2", seed, protect + held, m, "sentiment")
            coarse = entry["carried"].get("coarse") or {}
            print(f"  coarse test accuracy {before:.4f} -> {(coarse.get('end') or {}).get('accuracy')}", flush=True)


def _mean(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    return f"{100 * mean:.1f}" + (f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else "")


def table(results: list[dict]) -> str:
    lines = [
        "| kind | data | variant | seeds | task accuracy | STS-B Spearman | cosine to start x100 "
        "| carried coarse test acc | agreement | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["kind"], r["set"], r["variant"])].append(r)
    for (kind, name, variant), rows in groups.items():
        carried = [((r["carried"].get("coarse") or {}).get("end") or {}).get("accuracy") for r in rows]
        agreement = [r["agreement"].get("coarse") for r in rows]
        lines.append(
            f"| {kind} | {name} | {variant} | {len(rows)} | {_mean([r['accuracy'] for r in rows])} | "
            f"{_mean([r['sts'] for r in rows])} | {_mean([r['cosine'] for r in rows])} | {_mean(carried)} | "
            f"{_mean(agreement)} | {statistics.mean(r['train_s'] for r in rows):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", nargs="?", choices=("sequential", "embedding"))
    parser.add_argument("--sets", default="sst2_4000,trec,banking77_8,banking77")
    parser.add_argument("--weights", default="0,0.3")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--table", action="store_true")
    parser.add_argument(
        "--start-embedding", type=float, default=None, help="sequential: the coarse model's keep.embedding"
    )
    parser.add_argument("--protects", default="safe,free,distill")
    parser.add_argument("--keep-heads", type=float, default=None, help="sequential: training.keep.heads")
    parser.add_argument(
        "--keep-texts", type=int, default=None, help="sequential: keep.texts = the coarse training file, this many"
    )
    parser.add_argument("--tag", default="", help="appended to the variant's name (e.g. the environment it ran in)")
    args = parser.parse_args()
    if args.table or args.kind is None:
        print(table(json.loads(RESULTS.read_text()) if RESULTS.exists() else []))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mtst-retention-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.kind == "embedding":
        embedding(args.sets.split(","), [float(w) for w in args.weights.split(",")], seeds, work)
    else:
        sequential(
            seeds,
            work,
            start_embedding=args.start_embedding,
            protects=tuple(args.protects.split(",")),
            keep_heads=args.keep_heads,
            keep_texts=args.keep_texts,
            tag=args.tag,
        )


if __name__ == "__main__":
    main()

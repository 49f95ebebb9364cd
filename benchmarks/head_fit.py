"""Linear heads on frozen features, few-shot: mtst's fitted head against scikit-learn's logistic regression.

Same body (bundled all-MiniLM-L6-v2), same samples (n examples per class, drawn
per seed as SetFit's ``sample_dataset`` does: shuffle each class, keep the
first n), same test sets. Every method fits on the same encoded features, so
the figures compare only how the head is fitted:

- ``sklearn LR``: ``LogisticRegression(max_iter=1000)`` on normalised embeddings,
  the five-line baseline a user writes by hand;
- ``ridge (old frozen)``: the closed-form ridge the ``frozen`` strategy used before;
- ``mtst frozen``: cross-validated multinomial logistic regression (``mtst.modeling.logistic``) on
  normalised embeddings, as the ``frozen`` strategy fits its linear heads.

Prints accuracy mean +- std over seeds and the ratio to the baseline measured in
the same run; writes ``results/head_fit.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from _common import DATA, ROOT, machine, read_jsonl
from mtst.modeling.encoder import SentenceEncoder
from mtst.modeling.logistic import fit_logistic

DATASETS = {
    "sst2": ("sst2", "sentiment", (8, 64)),
    "trec": ("trec", "coarse", (8, 64)),
    "banking77": ("banking77", "intent", (8, 16)),
}


def sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)])


def ridge(x: torch.Tensor, y: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    x1 = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(y), k).double()
    reg = 1e-2 * x1.pow(2).sum() / len(x1) * torch.eye(x1.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(x1.T @ x1 + reg, x1.T @ onehot)
    return w[:-1].T, w[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    encoder = SentenceEncoder.from_pretrained()
    from sklearn.linear_model import LogisticRegression

    results = []
    for name, (folder, column, sizes) in DATASETS.items():
        train = read_jsonl(DATA / folder / "train.jsonl")
        test = read_jsonl(DATA / folder / "test.jsonl")
        names = sorted({str(r[column]) for r in train})
        y_all = np.array([names.index(str(r[column])) for r in train])
        y_test = np.array([names.index(str(r[column])) for r in test])
        picks = {(n, s): sample(y_all, n, s) for n in sizes for s in range(args.seeds)}
        rows = sorted({int(i) for idx in picks.values() for i in idx})
        started = time.perf_counter()
        emb = dict(zip(rows, encoder.encode([train[i]["text"] for i in rows], normalize=False), strict=True))
        x_test = torch.as_tensor(encoder.encode([r["text"] for r in test], normalize=False))
        print(f"{name}: encoded {len(rows) + len(test)} texts in {time.perf_counter() - started:.0f} s")
        for n in sizes:
            scores: dict[str, list[float]] = {"sklearn LR": [], "ridge (old frozen)": [], "mtst frozen": []}
            seconds: dict[str, float] = dict.fromkeys(scores, 0.0)
            for s in range(args.seeds):
                idx = picks[(n, s)]
                x = torch.as_tensor(np.stack([emb[int(i)] for i in idx]))
                y = y_all[idx]
                t = time.perf_counter()
                norm = torch.nn.functional.normalize
                lr = LogisticRegression(max_iter=1000).fit(norm(x, dim=1).numpy(), y)
                scores["sklearn LR"].append(float((lr.predict(norm(x_test, dim=1).numpy()) == y_test).mean()))
                seconds["sklearn LR"] += time.perf_counter() - t
                t = time.perf_counter()
                w, b = ridge(x, y, len(names))
                scores["ridge (old frozen)"].append(
                    float(((x_test.double() @ w.T + b).argmax(1).numpy() == y_test).mean())
                )
                seconds["ridge (old frozen)"] += time.perf_counter() - t
                t = time.perf_counter()  # as the frozen strategy does: normalised input, CV'd strength
                fit = fit_logistic(norm(x, dim=1), y, len(names), seed=s)
                pred = (norm(x_test, dim=1).double() @ fit.weight.T + fit.bias).argmax(1).numpy()
                scores["mtst frozen"].append(float((pred == y_test).mean()))
                seconds["mtst frozen"] += time.perf_counter() - t
            base = float(np.mean(scores["sklearn LR"]))
            for method, values in scores.items():
                mean, std = 100 * float(np.mean(values)), 100 * float(np.std(values))
                row = {
                    "dataset": name,
                    "per_class": n,
                    "method": method,
                    "accuracy": round(mean, 2),
                    "std": round(std, 2),
                    "vs_sklearn_points": round(mean - 100 * base, 2),
                    "fit_seconds_per_seed": round(seconds[method] / args.seeds, 3),
                }
                results.append(row)
                print(
                    f"  {n:>3}/class  {method:<20} {mean:5.1f} +- {std:4.1f}  "
                    f"({row['vs_sklearn_points']:+.1f} vs sklearn LR, fit {row['fit_seconds_per_seed']:.2f} s)"
                )
    out = ROOT / "benchmarks" / "results" / "head_fit.json"
    out.write_text(json.dumps({"machine": machine(), "seeds": args.seeds, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

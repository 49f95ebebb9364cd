"""Weight averaging on full data: does an average of the run's weights beat its last weights?

One `full` run per dataset and seed (any training overrides, e.g. layer-wise decay) keeps,
beside its final weights, exponential moving averages with horizons of 5, 10 and 20% of the
run and uniform averages of its last quarter and half, and scores each on the test set. The
variants share one run, so they differ by the averaging alone. 1 torch thread by default;
results in ``results/weight_averaging.json``.

    python benchmarks/weight_averaging.py --datasets trec,sst2,banking77 --seeds 1 \\
        --mtst-set '{"lr_backbone": 1e-4, "layer_decay": 0.8}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import DATA, ROOT, machine, read_jsonl
from fewshot import DATASETS, FULL_CAP, full_rows, run_mtst, save_result
from mtst.training.loop import Callback, StepEvent

RESULTS = ROOT / "benchmarks" / "results" / "weight_averaging.json"
EMA_HORIZONS = (0.05, 0.1, 0.2)  # fraction of the run's steps
TAILS = (0.25, 0.5)  # uniform average over this last fraction of the run


class Averages(Callback):
    """Callback: running averages of the trainable weights; on the last step, every variant's test accuracy."""

    def __init__(self, test: list[dict]) -> None:
        self.test = test
        self.ema: dict[str, dict[str, torch.Tensor]] = {}
        self.tail: dict[str, dict[str, torch.Tensor]] = {}
        self.count: dict[str, int] = {}
        self.scores: dict[str, float] = {}

    @staticmethod
    def _params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def on_step_end(self, event: StepEvent) -> None:
        total, step = event.plan.total_steps, event.state.global_step
        params = self._params(event.model)
        for horizon in EMA_HORIZONS:
            decay, key = 1 - 1 / (horizon * total), f"ema {horizon:.0%}"
            if key not in self.ema:
                self.ema[key] = {n: p.detach().clone() for n, p in params.items()}
                continue
            for n, p in params.items():
                self.ema[key][n].mul_(decay).add_(p.detach(), alpha=1 - decay)
        for frac in TAILS:
            key = f"last {frac:.0%}"
            if step > (1 - frac) * total:
                acc = self.tail.setdefault(key, {n: torch.zeros_like(p) for n, p in params.items()})
                for n, p in params.items():
                    acc[n].add_(p.detach())
                self.count[key] = self.count.get(key, 0) + 1

    @torch.no_grad()
    def on_train_end(self, event: StepEvent) -> None:
        model, params = event.model, self._params(event.model)
        final = {n: p.detach().clone() for n, p in params.items()}
        tails = {k: {n: v / self.count[k] for n, v in acc.items()} for k, acc in self.tail.items()}
        labels = np.asarray(model.task_specs()["label"].labels)
        gold = np.asarray([str(r["label"]) for r in self.test])
        texts = [r["text"] for r in self.test]
        for key, weights in {"final": final, **self.ema, **tails}.items():
            for n, p in params.items():
                p.copy_(weights[n])
            probs = model.predict_proba(texts, ["label"], batch_size=64)["label"]
            self.scores[key] = float(100 * np.mean(labels[probs.argmax(1)] == gold))
        for n, p in params.items():  # the run saves and scores its own final weights
            p.copy_(final[n])


def run(name: str, seed: int, overrides: dict) -> tuple[dict[str, float], float]:
    folder, column, _ = DATASETS[name]
    train = full_rows(read_jsonl(DATA / folder / "train.jsonl"), column, FULL_CAP)
    test = [{"text": r["text"], "label": r[column]} for r in read_jsonl(DATA / folder / "test.jsonl")]
    averages = Averages(test)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(seed)
        _, seconds = run_mtst(train, test, seed, Path(tmp), {"strategy": "full", **overrides}, [averages])
    return averages.scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="trec,sst2,banking77")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--mtst-set", default="{}", help="JSON of training overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    for name in args.datasets.split(","):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            scores, seconds = run(name, seed, json.loads(args.mtst_set))
            entry = {"dataset": name, "seed": seed, "mtst_set": args.mtst_set, "scores": scores, "seconds": seconds}
            save_result(Path(args.out), entry)
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()

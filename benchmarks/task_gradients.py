"""Do two tasks pull a shared encoder the same way? Gradient agreement during one multi-task run.

Trains the shared model of a ``multitask.py`` pair (default recipe, or ``--mtst-set``) and, every
``--every`` steps, takes each task's gradient with respect to the encoder's weights on a fixed probe
of training rows (eval mode, the run's RNG untouched, its gradients restored): their cosine (below
zero: the tasks conflict) and norms (how much of a summed update each task owns). The run itself is
unchanged, so its test accuracy is the shared figure of ``multitask.py`` for the same seed.

    python benchmarks/task_gradients.py --pair trec --size 0 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # what `import mtst` sets (mtst/threads.py); torch loads first here

import numpy as np
import torch

from _common import ROOT, machine
from mtst.training.loop import Callback, StepEvent
from multitask import FULL_CAP, PAIRS, pair_data, run

RESULTS = ROOT / "benchmarks" / "results" / "task_gradients.json"


class GradientProbe(Callback):
    """A callback: per-task encoder gradients on fixed probe rows, every ``every`` steps."""

    def __init__(self, texts: list[str], labels: dict[str, list[str | None]], every: int) -> None:
        self.texts = texts
        self.labels = labels
        self.every = every
        self.records: list[dict] = []

    def on_step_end(self, event: StepEvent) -> None:
        step = event.state.global_step
        if step == 1 or step % self.every == 0 or step == event.plan.total_steps:
            self._probe(event, step)

    def _probe(self, event: StepEvent, step: int) -> None:
        model = event.model
        params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")]
        saved = [p.grad for p in params]
        modes = {m: m.training for m in model.modules()}
        tasks = list(self.labels)
        grads = {t: [torch.zeros_like(p) for p in params] for t in tasks}
        losses = {t: 0.0 for t in tasks}
        with torch.random.fork_rng():
            model.eval()
            for start in range(0, len(self.texts), 64):
                features = model.encoder.tokenize(self.texts[start : start + 64])
                model(features, tasks)
                for t in tasks:
                    names = self.labels[t][start : start + 64]
                    target = torch.tensor([model.tasks[t].labels.index(v) if v is not None else -100 for v in names])
                    _, per_task = model.compute_loss(features, {t: target})
                    if t not in per_task:
                        continue
                    g = torch.autograd.grad(per_task[t], params, retain_graph=True, allow_unused=True)
                    for acc, gi in zip(grads[t], g, strict=True):
                        if gi is not None:
                            acc += gi
                    losses[t] += per_task[t].item()
        for m, training in modes.items():
            m.train(training)
        for p, g in zip(params, saved, strict=True):
            p.grad = g
        flat = {t: torch.cat([g.reshape(-1) for g in grads[t]]) for t in tasks}
        a, b = (flat[t] for t in tasks)
        batches = -(-len(self.texts) // 64)
        record = {
            "step": step,
            "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            **{f"norm_{t}": float(flat[t].norm()) for t in tasks},
            **{f"loss_{t}": losses[t] / batches for t in tasks},
        }
        self.records.append(record)
        print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="trec", choices=sorted(PAIRS))
    parser.add_argument("--size", type=int, default=0, help="examples per class; 0: full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=64)
    parser.add_argument("--probe-rows", type=int, default=256)
    parser.add_argument("--mtst-set", default="{}")
    parser.add_argument("--tag", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    tasks = PAIRS[args.pair]
    train, test = pair_data(args.pair, args.size, args.seed, FULL_CAP)
    picked = np.random.default_rng(1234).permutation(len(train))[: args.probe_rows]
    probe = GradientProbe(
        [train[i]["text"] for i in picked], {t: [train[i][t] for i in picked] for t in tasks}, args.every
    )
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(args.seed)
        accuracy, seconds = run(train, test, tasks, args.seed, Path(tmp), json.loads(args.mtst_set), [probe])
    entry = {
        "pair": args.pair,
        "size": args.size,
        "seed": args.seed,
        "tag": args.tag,
        "mtst_set": args.mtst_set,
        "accuracy": accuracy,
        "seconds": round(seconds, 2),
        "probes": probe.records,
    }
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([*results, entry], indent=1))
    print(json.dumps({k: v for k, v in entry.items() if k != "probes"}))


if __name__ == "__main__":
    main()

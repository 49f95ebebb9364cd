"""The contrastive stage checked on validation (``training.contrastive.check``): what it costs, what it decides,
and whether the decision was the right one on test.

For each few-shot sample (SetFit's ``sample_dataset``, as ``fewshot.py``) with a validation split (the
dataset's dev split, or a seeded sample of the training rows outside the few-shot sample), three runs of
mtst's default recipe, in process, 2 threads:

- ``checked``: the default (the check on); its verdict, test accuracy and training seconds;
- ``stage``: ``contrastive.check: false`` (the tuned encoder, always): its test accuracy and seconds;
- ``no stage``: ``contrastive.enabled: false`` (logistic heads on the pretrained encoder).

The check chose right where its model's test accuracy is the higher of ``stage`` and ``no stage``; its
cost is ``checked``'s seconds over ``stage``'s. Results go to ``results/stage_check.json``.

    python benchmarks/stage_check.py --cells sst2:8,sst2:64,trec:8,trec:64,sst5:64 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import DATA, ROOT, machine, read_jsonl
from fewshot import run_mtst, sample, save_result

COLUMNS = {"sst2": "sentiment", "trec": "coarse", "sst5": "label", "banking77": "intent"}
RESULTS = ROOT / "benchmarks" / "results" / "stage_check.json"
VARIANTS = {"checked": {}, "stage": {"contrastive": {"check": False}}, "no stage": {"contrastive": {"enabled": False}}}


def validation_rows(name: str, train: list[dict], picked: list[dict], size: int, seed: int) -> list[dict]:
    """The dataset's dev split, else ``size`` training rows outside the few-shot sample (seeded)."""
    column = COLUMNS[name]
    dev = DATA / name / "dev.jsonl"
    if dev.exists():
        return [{"text": r["text"], "label": r[column]} for r in read_jsonl(dev)]
    taken = {r["text"] for r in picked}
    rest = [r for r in train if r["text"] not in taken]
    order = np.random.default_rng(1000 + seed).permutation(len(rest))[:size]
    return [{"text": rest[i]["text"], "label": rest[i][column]} for i in order]


def run(train: list[dict], validation: list[dict], test: list[dict], seed: int, overrides: dict) -> dict:
    """One run with a validation split: test accuracy, training seconds and the stage check's record."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        accuracy, seconds = run_mtst(train, test, seed, work, overrides, validation=validation)
        summary = json.loads((work / "run" / "metrics.json").read_text())
    return {"accuracy": accuracy, "seconds": seconds, "stage_check": summary.get("stage_check")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="sst2:8,sst2:64,trec:8,trec:64,sst5:64", help="dataset:rows per class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--validation", type=int, default=500, help="rows, where the dataset has no dev split")
    parser.add_argument("--mtst-set", default="{}", help="JSON of training overrides for every run")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    extra = json.loads(args.mtst_set)
    for cell in args.cells.split(","):
        name, size = cell.split(":")
        column = COLUMNS[name]
        train_all, test_rows = read_jsonl(DATA / name / "train.jsonl"), read_jsonl(DATA / name / "test.jsonl")
        test = [{"text": r["text"], "label": r[column]} for r in test_rows]
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            picked = sample(train_all, column, int(size), seed)
            validation = validation_rows(name, train_all, picked, args.validation, seed)
            entry: dict = {"dataset": name, "size": int(size), "seed": seed, "tag": args.tag, "machine": machine()}
            entry["validation_rows"] = len(validation)
            for variant, overrides in VARIANTS.items():
                contrastive = {**extra.get("contrastive", {}), **overrides.get("contrastive", {})}
                entry[variant] = run(picked, validation, test, seed, {**extra, "contrastive": contrastive})
            check = entry["checked"]["stage_check"] or {}
            best = max(entry["stage"]["accuracy"], entry["no stage"]["accuracy"])
            entry["right"] = entry["checked"]["accuracy"] == best
            save_result(Path(args.out), entry)
            print(
                f"{name} {size}/class seed {seed}: checked {entry['checked']['accuracy']:.1f} "
                f"({entry['checked']['seconds']:.1f} s, kept={check.get('kept')}, "
                f"share {check.get('share_before_higher')}), stage {entry['stage']['accuracy']:.1f} "
                f"({entry['stage']['seconds']:.1f} s), no stage {entry['no stage']['accuracy']:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

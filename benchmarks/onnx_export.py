"""Exported models on a test split: accuracy and speed of torch fp32, ONNX and OpenVINO, fp32 and int8.

Trains a default model (the bundled demo, or --dataset from the shared data at --per-class rows per
class), exports it, and predicts the test split with each backend. Speed is sentences per second over
--repeat passes, measured in this run; the ratios are against the torch model. With --openvino, the
OpenVINO int8 export twice: calibrated on the bundled demo's texts (what ``mtst export`` does without
--calibration) and on the run's own training texts (``--calibration train.jsonl``).

    python benchmarks/onnx_export.py                          # the demo, ONNX
    python benchmarks/onnx_export.py --openvino --dataset sst2 --per-class 64
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _common import DATA, machine, read_jsonl
from mtst.config import load_config, validate_config
from mtst.demo import DEMO_DIR
from mtst.export import OnnxPredictor, export
from mtst.fileio import dir_mb
from mtst.modeling.model import MultiTaskModel
from mtst.training.trainer import train

DATASETS = {"sst2": "sentiment", "trec": "coarse", "banking77": "intent"}  # name: label column


def timed(predict: Callable, texts: list[str], repeat: int) -> tuple[list[dict], float]:
    predict(texts[:8])  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        rows = predict(texts)
    return rows, repeat * len(texts) / (time.perf_counter() - start)


def per_class(rows: list[dict], column: str, n: int, seed: int) -> list[dict]:
    """``n`` rows of each label, drawn with ``seed``."""
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r[column], []).append(r)
    rng = random.Random(seed)
    return [r for label in sorted(by_label) for r in rng.sample(by_label[label], min(n, len(by_label[label])))]


def train_run(args: argparse.Namespace, work: Path) -> tuple[Path, list[dict], dict[str, str], Path | None]:
    """A trained run, its test rows, task -> label column, and its training texts' file (None: the demo)."""
    if args.dataset == "demo":
        with open(DEMO_DIR / "test.csv", newline="", encoding="utf-8") as fh:
            test = list(csv.DictReader(fh))
        if args.run is not None:
            return args.run, test, {"category": "category", "sentiment": "sentiment"}, None
        cfg = load_config(None)
        cfg.output_dir = str(work / "demo")
        train(cfg, show_progress=False, console=Console(quiet=True))
        return Path(cfg.output_dir), test, {"category": "category", "sentiment": "sentiment"}, None
    column = DATASETS[args.dataset]
    rows = per_class(read_jsonl(DATA / args.dataset / "train.jsonl"), column, args.per_class, args.seed)
    test = read_jsonl(DATA / args.dataset / "test.jsonl")
    train_file = work / "train.jsonl"
    train_file.write_text("".join(json.dumps({"text": r["text"], column: r[column]}) + "\n" for r in rows))
    raw = {
        "tasks": {column: {}},
        "data": {"train": str(train_file)},
        "training": {"seed": args.seed},
        "output_dir": str(work / "run"),
    }
    train(validate_config(raw), show_progress=False, console=Console(quiet=True))
    return work / "run", test, {column: column}, train_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, help="a trained demo run; default: train one")
    parser.add_argument("--dataset", choices=["demo", *DATASETS], default="demo")
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--openvino", action="store_true", help="also OpenVINO fp32 and static int8")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="default: results/onnx_export[_DATASET].json")
    args = parser.parse_args()
    suffix = "" if args.dataset == "demo" else f"_{args.dataset}"
    output = args.output or Path(f"benchmarks/results/onnx_export{suffix}.json")
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        run, rows, tasks, train_file = train_run(args, Path(tmp))
        texts = [r["text"] for r in rows]
        model = MultiTaskModel.load(run)
        backends = {"torch fp32": lambda t: model.predict(t, batch_size=32)}
        sizes = {"torch fp32": dir_mb(run / "model") * 2**20}
        exports: list[tuple[str, str, str | None, list[str] | None]] = [
            ("onnx fp32", "onnx", None, None),
            ("onnx int8", "onnx", "int8", None),
        ]
        if args.openvino:
            exports += [("openvino fp32", "openvino", None, None), ("openvino int8", "openvino", "int8", None)]
            if train_file is not None:
                own = [json.loads(line)["text"] for line in train_file.read_text().splitlines()]
                exports.append(("openvino int8, own texts", "openvino", "int8", own))
        for name, fmt, quantize, calibration in exports:
            out = export(run, fmt, Path(tmp) / name.replace(" ", "_").replace(",", ""), quantize, calibration)
            predictor = OnnxPredictor(out)
            backends[name] = lambda t, p=predictor: p.predict(t, batch_size=32)
            sizes[name] = sum(f.stat().st_size for f in out.iterdir() if f.suffix in (".onnx", ".bin"))
        results = []
        base_speed = None
        for name, predict in backends.items():
            predicted, speed = timed(predict, texts, args.repeat)
            base_speed = base_speed or speed
            acc = {
                task: sum(p[task]["label"] == str(r[col]) for p, r in zip(predicted, rows, strict=True)) / len(rows)
                for task, col in tasks.items()
            }
            results.append(
                {
                    "backend": name,
                    "sentences_per_s": speed,
                    "speedup": speed / base_speed,
                    "accuracy": acc,
                    "file_mb": sizes[name] / 2**20,
                }
            )
    title = f"{args.dataset} test split ({len(texts)} texts)"
    if args.dataset != "demo":
        title += f" · trained on {args.per_class}/class, seed {args.seed}"
    table = Table(title=f"{title} · {machine()}")
    for col in ("backend", *(f"{t} acc" for t in tasks), "sentences/s", "vs torch", "weights MB"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in results:
        table.add_row(
            r["backend"],
            *(f"{100 * r['accuracy'][t]:.2f}" for t in tasks),
            f"{r['sentences_per_s']:.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['file_mb']:.1f}",
        )
    console.print(table)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"dataset": args.dataset, "machine": machine(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

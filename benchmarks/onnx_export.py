"""ONNX export on the demo test split: accuracy and speed of torch fp32, ONNX fp32 and ONNX int8.

Trains the bundled demo (or takes a run with --run), exports it twice, and
predicts the 90 demo test reviews with each backend. Speed is sentences per
second over --repeat passes, measured in this run; the ratios are against
the torch model.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _common import machine
from mtst.compare import dir_mb
from mtst.config import load_config
from mtst.demo import DEMO_DIR
from mtst.export import OnnxPredictor, export
from mtst.modeling.model import MultiTaskModel
from mtst.training.trainer import train


def timed(predict, texts: list[str], repeat: int) -> tuple[list[dict], float]:
    predict(texts[:8])  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        rows = predict(texts)
    return rows, repeat * len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, help="a trained demo run; default: train one")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/onnx_export.json"))
    args = parser.parse_args()
    console = Console()
    with open(DEMO_DIR / "test.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            cfg = load_config(None)
            cfg.output_dir = str(Path(tmp) / "demo")
            train(cfg, show_progress=False, console=Console(quiet=True))
            run = Path(cfg.output_dir)
        model = MultiTaskModel.load(run)
        backends = {"torch fp32": lambda t: model.predict(t, batch_size=32)}
        sizes = {"torch fp32": dir_mb(run / "model") * 2**20}
        for name, quantize in (("onnx fp32", None), ("onnx int8", "int8")):
            out = export(run, "onnx", Path(tmp) / name.replace(" ", "_"), quantize)
            predictor = OnnxPredictor(out)
            backends[name] = lambda t, p=predictor: p.predict(t, batch_size=32)
            sizes[name] = (out / "model.onnx").stat().st_size
        results = []
        base_speed = None
        for name, predict in backends.items():
            predicted, speed = timed(predict, texts, args.repeat)
            base_speed = base_speed or speed
            acc = {
                task: sum(p[task]["label"] == r[task] for p, r in zip(predicted, rows, strict=True)) / len(rows)
                for task in ("category", "sentiment")
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
    table = Table(title=f"demo test split ({len(texts)} reviews) · {machine()}")
    for col in ("backend", "category acc", "sentiment acc", "sentences/s", "vs torch", "weights MB"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in results:
        table.add_row(
            r["backend"],
            f"{100 * r['accuracy']['category']:.1f}",
            f"{100 * r['accuracy']['sentiment']:.1f}",
            f"{r['sentences_per_s']:.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['file_mb']:.1f}",
        )
    console.print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

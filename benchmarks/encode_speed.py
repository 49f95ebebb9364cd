"""Encode throughput: mtst vs sentence-transformers on the same model and data.

Same 2,000 sentences of SST-2 test, same batch size, one process, runs
alternating between the implementations so that machine noise hits them alike.
Prints sentences/second for each and the ratio against sentence-transformers in
fp32 (mtst fp32: target >= 1.0, aim 1.3; mtst's reduced-precision paths: target
>= 2.3), model FLOP utilisation against this machine's measured fp32 matmul
throughput, and the quality each path keeps: the embeddings' cosine to mtst fp32
and STS-B test Spearman (within 0.005 of fp32's).

    python benchmarks/encode_speed.py            # fp32 and bf16 (where the CPU has it natively)
    python benchmarks/encode_speed.py --onnx     # and ONNX Runtime fp32 / dynamic int8
    python benchmarks/encode_speed.py --openvino # and OpenVINO fp32 / static int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from _common import DATA, machine, read_jsonl
from mtst.modeling.backbone import bundled_model_path
from mtst.modeling.encoder import SentenceEncoder, native_bf16


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def model_flops(encoder: SentenceEncoder, texts: list[str]) -> float:
    """Forward FLOPs for the real (unpadded) tokens: 2 x params x tokens + attention."""
    cfg = encoder.backbone.config
    params = sum(p.numel() for n, p in encoder.backbone.named_parameters() if "embeddings" not in n)
    total = 0.0
    for ids in encoder.tokenize_ids(texts):
        t = len(ids)
        total += 2 * params * t + 4 * cfg.num_hidden_layers * t * t * cfg.hidden_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--onnx", action="store_true", help="also ONNX Runtime fp32 and dynamic int8")
    parser.add_argument("--openvino", action="store_true", help="also OpenVINO fp32 and static int8")
    parser.add_argument("--out", default=None, help="append the figures to this JSON file")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = [r["text"] for r in read_jsonl(DATA / "sst2" / "test.jsonl", args.n)]
    ours = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    ref = SentenceTransformer(str(bundled_model_path()), device="cpu")
    paths: dict[str, Callable[[list[str]], np.ndarray]] = {
        "sentence-transformers": lambda xs: ref.encode(xs, batch_size=args.batch_size),
        "mtst": lambda xs: ours.encode(xs, batch_size=args.batch_size),
    }
    if native_bf16():
        bf16 = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
        bf16.set_inference_precision("bf16")
        paths["mtst bf16"] = lambda xs: bf16.encode(xs, batch_size=args.batch_size)
    if args.onnx:
        paths.update(export_paths(args.batch_size, "onnx"))
    if args.openvino:
        paths.update(export_paths(args.batch_size, "openvino"))
    for encode in paths.values():
        encode(texts[:64])
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, encode in paths.items():
            start = time.perf_counter()
            encode(texts)
            times[name].append(time.perf_counter() - start)

    reference = paths["mtst"](texts)
    sts = read_jsonl(DATA / "stsb" / "test.jsonl")
    peak = matmul_gflops()
    flops = model_flops(ours, texts)
    table = Table(title=f"encode speed · {len(texts)} SST-2 sentences · batch {args.batch_size} · {machine()}")
    for col in ("implementation", "median s", "sentences/s", "GFLOP/s", "MFU", "vs ST fp32", "cos to fp32", "STS-B"):
        table.add_column(col, justify="right")
    rows = []
    base = len(texts) / statistics.median(times["sentence-transformers"])
    for name, runs in times.items():
        med = statistics.median(runs)
        rate = len(texts) / med
        gf = flops / med / 1e9
        emb = paths[name](texts)
        cosine = float(np.mean(np.sum(unit(emb) * unit(reference), axis=1)))
        spearman = sts_spearman(paths[name], sts)
        rows.append(
            {"path": name, "seconds": med, "rate": rate, "vs_st": rate / base, "cosine": cosine, "sts": spearman}
        )
        table.add_row(
            name, f"{med:.2f}", f"{rate:.0f}", f"{gf:.1f}", f"{gf / peak:.0%}", f"{rate / base:.2f}x",
            f"{cosine:.5f}", f"{100 * spearman:.2f}",
        )  # fmt: skip
    console = Console(width=150)
    console.print(table)
    console.print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s")
    if args.out:
        out = Path(args.out)
        previous = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps([*previous, {"machine": machine(), "n": len(texts), "paths": rows}], indent=1))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sts_spearman(encode: Callable[[list[str]], np.ndarray], rows: list[dict]) -> float:
    """STS-B test Spearman of the cosine of each pair's embeddings."""
    from scipy.stats import spearmanr

    a = unit(encode([r["sentence1"] for r in rows]))
    b = unit(encode([r["sentence2"] for r in rows]))
    return float(spearmanr(np.sum(a * b, axis=1), [r["score"] for r in rows]).statistic)


def export_paths(batch_size: int, fmt: str) -> dict[str, Callable[[list[str]], np.ndarray]]:
    """The bundled encoder exported by ``mtst export --format FMT``, with and without ``--quantize int8``
    (OpenVINO's int8 calibrated on the bundled demo's texts, the default)."""
    from mtst.export import OnnxPredictor, export_onnx, export_openvino
    from mtst.modeling.model import MultiTaskModel

    model = MultiTaskModel.from_backbone({}, backbone="all-MiniLM-L6-v2")
    work = Path(tempfile.mkdtemp())
    write = export_onnx if fmt == "onnx" else export_openvino
    out = {}
    for precision, quantize in (("fp32", None), ("int8", "int8")):
        name = f"{'ONNX' if fmt == 'onnx' else 'OpenVINO'} {precision}"
        predictor = OnnxPredictor(write(model, work / name.replace(" ", "_"), quantize))
        out[name] = lambda xs, p=predictor: p.encode(xs, batch_size=batch_size)
    return out


if __name__ == "__main__":
    main()

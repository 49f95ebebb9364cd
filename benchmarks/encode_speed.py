"""Encode throughput: mtst vs sentence-transformers on the same model and data.

Same 2,000 sentences of SST-2 test, same batch size, one process, runs
alternating between the two so that machine noise hits both alike. Prints
sentences/second for each and the ratio (target >= 1.0, aim 1.3), plus model
FLOP utilisation against this machine's measured fp32 matmul throughput.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from _common import DATA, machine, read_jsonl
from mtst.modeling.backbone import bundled_model_path
from mtst.modeling.encoder import SentenceEncoder


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
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = [r["text"] for r in read_jsonl(DATA / "sst2" / "test.jsonl", args.n)]
    ours = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    ref = SentenceTransformer(str(bundled_model_path()), device="cpu")
    ours.encode(texts[:64])
    ref.encode(texts[:64])
    times: dict[str, list[float]] = {"mtst": [], "sentence-transformers": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        ours.encode(texts, batch_size=args.batch_size)
        times["mtst"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref.encode(texts, batch_size=args.batch_size)
        times["sentence-transformers"].append(time.perf_counter() - start)

    peak = matmul_gflops()
    flops = model_flops(ours, texts)
    table = Table(title=f"encode speed · {len(texts)} SST-2 sentences · batch {args.batch_size} · {machine()}")
    for col in ("implementation", "median s", "sentences/s", "GFLOP/s", "MFU"):
        table.add_column(col, justify="right")
    rate = {}
    for name, runs in times.items():
        med = statistics.median(runs)
        rate[name] = len(texts) / med
        gf = flops / med / 1e9
        table.add_row(name, f"{med:.2f}", f"{rate[name]:.0f}", f"{gf:.1f}", f"{gf / peak:.0%}")
    console = Console()
    console.print(table)
    console.print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s")
    console.print(
        f"ratio mtst / sentence-transformers: [bold]{rate['mtst'] / rate['sentence-transformers']:.2f}x[/bold]"
    )


if __name__ == "__main__":
    main()

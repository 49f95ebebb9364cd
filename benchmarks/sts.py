"""STS-B test: Spearman of cosine similarity against gold scores, per pooling.

Published for all-MiniLM-L6-v2 with mean pooling: 0.820 (target >= 0.815).
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

from _common import DATA, machine, read_jsonl
from mtst.evaluate import spearman
from mtst.modeling.encoder import SentenceEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    rows = read_jsonl(DATA / "stsb" / f"{args.split}.jsonl")
    gold = np.array([r["score"] for r in rows])
    encoder = SentenceEncoder.from_pretrained(args.model)
    table = Table(title=f"STS-B {args.split} ({len(rows)} pairs) · {args.model} · {machine()}")
    table.add_column("pooling")
    table.add_column("Spearman x100", justify="right")
    for pooling in ("mean", "max", "cls"):
        a = encoder.encode([r["sentence1"] for r in rows], pooling=pooling, normalize=True)
        b = encoder.encode([r["sentence2"] for r in rows], pooling=pooling, normalize=True)
        table.add_row(pooling, f"{100 * spearman((a * b).sum(1), gold):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()

"""Start-up: a fresh process to its first embedding, BERT loaded without transformers against through it.

Every mtst command starts this way (train, predict, encode, serve, each run of ``mtst compare``), so its
fixed cost is paid once per command. Child processes alternate between ``MTST_NATIVE_BERT=1`` (the
default: :mod:`mtst.standins.bert` and :mod:`mtst.standins.tokenizer`) and ``0`` (transformers'
``AutoModel`` and ``AutoTokenizer``) so that machine noise hits both alike; each reports its phases
(imports, the backbone's load, the first encoding). Prints medians and the native/transformers ratio of
the whole process.

    python benchmarks/startup.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from _common import machine

CHILD = """
import json, time
started = time.perf_counter()
from mtst.modeling.encoder import SentenceEncoder
imported = time.perf_counter()
encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
loaded = time.perf_counter()
encoder.encode(["the first sentence"])
done = time.perf_counter()
print(json.dumps({"imports": imported - started, "load": loaded - imported, "first_encode": done - loaded,
                  "backbone": type(encoder.backbone).__name__}))
"""

VARIANTS = {"native": "1", "transformers": "0"}


def child(native: str, threads: int) -> dict[str, float]:
    env = {**os.environ, "MTST_NATIVE_BERT": native, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True)
    whole = time.perf_counter() - started
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "whole": whole}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write every child's figures to this JSON file")
    args = parser.parse_args()
    print(machine())
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, flag in VARIANTS.items():
            runs[name].append(child(flag, args.threads))
    table = Table(title=f"a fresh process to its first embedding, median of {args.rounds} (s)")
    for column in ("backbone", "whole process", "imports", "backbone load", "first encode", "range (whole)"):
        table.add_column(column, justify="left" if column == "backbone" else "right")
    for name, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("whole", "imports", "load", "first_encode")}
        whole = [r["whole"] for r in rows]
        table.add_row(
            f"{name} ({rows[0]['backbone']})",
            f"{med['whole']:.2f}",
            f"{med['imports']:.2f}",
            f"{med['load']:.2f}",
            f"{med['first_encode']:.2f}",
            f"{min(whole):.2f}-{max(whole):.2f}",
        )
    Console(width=120).print(table)
    ratio = statistics.median(r["whole"] for r in runs["native"]) / statistics.median(
        r["whole"] for r in runs["transformers"]
    )
    print(f"native / transformers, whole process: {ratio:.2f}x")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"machine": machine(), "runs": runs, "ratio": ratio}, fh, indent=1)


if __name__ == "__main__":
    main()

"""Write a seeded random subset of a JSON Lines file: python subset.py SOURCE ROWS TARGET [--seed 0].

The same rows as ``accuracy.py`` and ``train_speed.py`` use for SST-2 (seed 0).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("rows", type=int)
    parser.add_argument("target", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.source.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(args.seed).shuffle(rows)
    args.target.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.rows]), encoding="utf-8")
    print(f"wrote {min(args.rows, len(rows))} rows to {args.target}")


if __name__ == "__main__":
    main()

"""What runs compute, as sha256 digests: a restructuring of the code must leave every digest as it was.

Trains every strategy and ``auto`` on the bundled demo, and ``auto`` on a TREC subset (``--trec``,
from ``../shared/data``), then hashes each run's ``metrics.json`` and ``metrics.jsonl`` (timings, memory
and paths left out: they differ from run to run) and its model's weights.

    python scripts/run_fingerprints.py --out /tmp/before.json [--trec ../shared/data/trec]
    python scripts/run_fingerprints.py --out /tmp/after.json --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

STRATEGIES = ("frozen", "heads", "top_k", "gradual", "full", "lora", "auto")
VOLATILE = ("seconds", "rss", "_mb", "time", "run_dir", "path", "started", "host", "pid", "version")


def _stable(value: Any) -> Any:
    """The record without its volatile entries (timings, memory, paths, versions)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not any(word in k for word in VOLATILE)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(run: Path) -> dict[str, str]:
    summary = _stable(json.loads((run / "metrics.json").read_text()))
    history = [_stable(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    weights = sorted((run / "model").rglob("*.safetensors"))
    return {
        "metrics.json": _digest(json.dumps(summary, sort_keys=True).encode()),
        "metrics.jsonl": _digest(json.dumps(history, sort_keys=True).encode()),
        "weights": _digest(b"".join(p.read_bytes() for p in weights)),
    }


def train(config: Path | None, strategy: str, run: Path, extra: list[str]) -> None:
    command = [sys.executable, "-m", "mtst", "train", *([str(config)] if config else []), "-q", "--overwrite"]
    command += ["-o", str(run), "--set", f"training.strategy={strategy}", "--set", "training.precision=fp32", *extra]
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, default=None)
    parser.add_argument("--trec", type=Path, default=None, help="the shared TREC folder (train.jsonl, test.jsonl)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()
    out: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for strategy in args.strategies.split(","):
            train(None, strategy, root / strategy, [])
            out[f"demo/{strategy}"] = fingerprint(root / strategy)
            print(strategy, out[f"demo/{strategy}"], flush=True)
        if args.trec is not None:
            rows = (args.trec / "train.jsonl").read_text().splitlines()[:600]
            (root / "trec_train.jsonl").write_text("\n".join(rows) + "\n")
            config = root / "trec.yaml"
            config.write_text(
                f"tasks: {{coarse: {{}}}}\ndata: {{train: {root / 'trec_train.jsonl'}, "
                f"test: {(args.trec / 'test.jsonl').resolve()}}}\ntraining: {{seed: 0}}\n"
            )
            train(config, "auto", root / "trec", [])
            out["trec/auto"] = fingerprint(root / "trec")
            print("trec/auto", out["trec/auto"], flush=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    differ = [name for name in before if before[name] != out.get(name)]
    print("identical" if not differ else f"DIFFERENT: {', '.join(differ)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

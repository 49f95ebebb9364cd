"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from mtst.training.runtime.rundir import peak_rss_mb  # noqa: F401  (re-exported for the scripts)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MTST_BENCH_DATA", ROOT.parent / "shared" / "data"))  # override: another copy


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    if not path.exists():
        raise SystemExit(f"{path} not found: the benchmarks read ../shared/data beside the project")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def machine() -> str:
    """The machine in a line, with what decides the fast paths: the CPU's vector width (AVX2 or AVX512),
    native bf16 and int8 dot products (VNNI/AMX)."""
    from mtst.export.openvino import int8_dot_product
    from mtst.modeling.encoder import native_bf16

    cpu = platform.processor() or platform.machine()
    isa = torch.backends.cpu.get_cpu_capability()
    extras = [name for name, has in (("bf16", native_bf16()), ("int8 dot products", int8_dot_product())) if has]
    return f"{cpu} ({' + '.join([isa, *extras])}), {torch.get_num_threads()} torch threads, torch {torch.__version__}"

"""Load test of ``mtst serve`` on loopback: concurrent clients, latency percentiles, throughput.

Serves a model with the real all-MiniLM-L6-v2 backbone and two heads (the
heads' weights do not change the cost), sends --requests requests of one
SST-2 test sentence each from --clients concurrent clients, and compares the
served throughput with offline encoding of the same sentences measured in the
same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from _common import DATA, machine, read_jsonl
from mtst.heads import HeadSpec
from mtst.model import MultiTaskModel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, texts: list[str], clients: int) -> tuple[list[float], dict[int, int], float]:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)

    async def client(c: httpx.AsyncClient) -> None:
        while not queue.empty():
            text = queue.get_nowait()
            start = time.perf_counter()
            r = await c.post(f"{url}/predict", json={"texts": [text]})
            latencies.append(time.perf_counter() - start)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        return latencies, codes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/serve_load.json"))
    args = parser.parse_args()
    console = Console()
    texts = [r["text"] for r in read_jsonl(DATA / "sst2" / "test.jsonl")]
    texts = (texts * (args.requests // len(texts) + 1))[: args.requests]
    tasks = {
        "sentiment": HeadSpec(labels=["negative", "positive"]),
        "topic": HeadSpec(labels=["a", "b", "c", "d"], hidden_size=64),
    }
    model = MultiTaskModel.from_backbone(tasks)
    start = time.perf_counter()
    model.predict(texts, batch_size=64)
    offline = len(texts) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mtst", "serve", str(Path(tmp) / "model"), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    httpx.get(f"{url}/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            asyncio.run(load(url, texts[:64], 4))  # warm-up
            latencies, codes, wall = asyncio.run(load(url, texts, args.clients))
            batches = httpx.get(f"{url}/metrics").text
        finally:
            server.terminate()
            server.wait(timeout=30)
    lat = np.array(latencies) * 1000
    errors = sum(n for code, n in codes.items() if code != 200)
    mean_batch = [line for line in batches.splitlines() if line.startswith("mtst_batch_texts_")]
    total = float(next(x for x in mean_batch if x.startswith("mtst_batch_texts_sum")).split()[-1])
    count = float(next(x for x in mean_batch if x.startswith("mtst_batch_texts_count")).split()[-1])
    result = {
        "requests": len(texts),
        "clients": args.clients,
        "errors": errors,
        "status_codes": codes,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "throughput_rps": len(texts) / wall,
        "offline_sentences_per_s": offline,
        "ratio_to_offline": len(texts) / wall / offline,
        "mean_batch_texts": total / max(count, 1),
        "machine": machine(),
    }
    table = Table(title=f"mtst serve · {args.clients} clients · {len(texts)} requests · {machine()}")
    for key in (
        "errors",
        "p50_ms",
        "p99_ms",
        "throughput_rps",
        "offline_sentences_per_s",
        "ratio_to_offline",
        "mean_batch_texts",
    ):
        table.add_row(key, f"{result[key]:.2f}" if isinstance(result[key], float) else str(result[key]))
    console.print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

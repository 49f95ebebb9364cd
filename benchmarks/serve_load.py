"""Load test of ``mtst serve`` on loopback: concurrent clients, latency percentiles, throughput.

Serves a model with the real all-MiniLM-L6-v2 backbone and two heads (the
heads' weights do not change the cost), sends --requests requests of one
SST-2 test sentence each from --clients concurrent clients, and compares the
served throughput with offline prediction of the same sentences measured in
the same run: over all of them at once (globally length-sorted), and in
arrival order in chunks the size of the server's mean micro-batch (what a
server answering requests as they come has to work with).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from _common import DATA, machine, read_jsonl
from mtst.modeling.heads import HeadSpec
from mtst.modeling.model import MultiTaskModel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the server's worker processes; Linux /proc)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _) in stats.items() if ppid == parent and p not in tree]
        tree.update(children)
        frontier += children
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


def total_of(metrics_text: str, kind: str) -> float:
    """``mtst_batch_texts_sum`` or ``_count`` from /metrics (of the server process that answered)."""
    prefix = f"mtst_batch_texts_{kind}"
    return float(next(x for x in metrics_text.splitlines() if x.startswith(prefix)).split()[-1])


async def load(url: str, texts: list[str], clients: int) -> tuple[list[float], dict[int, int], float]:
    """Closed-loop clients, each sending its next request when the last one is answered.

    aiohttp rather than httpx: the load client shares the machine with the
    server, and httpx spends several times more CPU per request.
    """
    latencies: list[float] = []
    codes: dict[int, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            text = queue.get_nowait()
            start = time.perf_counter()
            async with session.post(f"{url}/predict", json={"texts": [text]}) as r:
                await r.read()
            latencies.append(time.perf_counter() - start)
            codes[r.status] = codes.get(r.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return latencies, codes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="mtst serve --workers (default: its own)")
    parser.add_argument(
        "--export",
        choices=["onnx", "onnx-int8", "openvino", "openvino-int8"],
        help="serve this export of the model (offline prediction through the same export)",
    )
    parser.add_argument("--no-packing", action="store_true", help="mtst serve --no-packing (batches padded)")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="a torch model's, served and offline alike"
    )
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
    with tempfile.TemporaryDirectory() as tmp:
        served = model.save(Path(tmp) / "model")
        predictor = model
        model.encoder.set_inference_precision(args.precision)
        if args.export:
            from mtst.export import OnnxPredictor, export

            fmt, _, quantize = args.export.partition("-")
            served = export(served, fmt, Path(tmp) / "export", quantize or None)
            predictor = OnnxPredictor(served)
        predictor.predict(texts[:64], batch_size=64)  # warm-up
        start = time.perf_counter()
        predictor.predict(texts, batch_size=64)
        offline = len(texts) / (time.perf_counter() - start)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mtst", "serve", str(served), "--port", str(port)]
            + (["--workers", str(args.workers)] if args.workers else [])
            + (["--no-packing"] if args.no_packing else [])
            + ([] if args.export else ["--precision", args.precision]),
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
            client_cpu0, server_cpu0 = client_cpu_seconds(), process_cpu_seconds(server.pid)
            latencies, codes, wall = asyncio.run(load(url, texts, args.clients))
            client_cpu = (client_cpu_seconds() - client_cpu0) / wall
            server_cpu = (process_cpu_seconds(server.pid) - server_cpu0) / wall
            batches = httpx.get(f"{url}/metrics").text
            info = httpx.get(f"{url}/info").json()
            workers = info["workers"]
        finally:
            server.terminate()
            server.wait(timeout=30)
    lat = np.array(latencies) * 1000
    mean_batch = total_of(batches, "sum") / max(total_of(batches, "count"), 1)
    # Batching as requests arrive, without HTTP: the same texts in arrival order, one predict call
    # per chunk the size of the server's mean micro-batch (each chunk one padded batch, where the
    # server also splits a micro-batch to bound padding).
    chunk = max(1, round(mean_batch))
    start = time.perf_counter()
    for i in range(0, len(texts), chunk):
        predictor.predict(texts[i : i + chunk], batch_size=64)
    offline_chunked = len(texts) / (time.perf_counter() - start)
    errors = sum(n for code, n in codes.items() if code != 200)
    result = {
        "served": args.export or "model (torch)",
        "requests": len(texts),
        "clients": args.clients,
        "errors": errors,
        "status_codes": codes,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "throughput_rps": len(texts) / wall,
        "offline_sentences_per_s": offline,
        "ratio_to_offline": len(texts) / wall / offline,
        "offline_in_batches_per_s": offline_chunked,
        "ratio_to_offline_in_batches": len(texts) / wall / offline_chunked,
        "mean_batch_texts": mean_batch,
        "server_processes": workers,
        "packing": info["packing"],
        "precision": info["precision"],
        "client_cores_busy": client_cpu,
        "server_cores_busy": server_cpu,
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
        "offline_in_batches_per_s",
        "ratio_to_offline_in_batches",
        "mean_batch_texts",
        "server_processes",
        "packing",
        "precision",
        "client_cores_busy",
        "server_cores_busy",
    ):
        table.add_row(key, f"{result[key]:.2f}" if isinstance(result[key], float) else str(result[key]))
    console.print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

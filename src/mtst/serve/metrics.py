"""The server's metrics in Prometheus' text format: requests by route and status, a latency histogram,
texts per forward pass. Paths are labelled by route, with every unknown path folded into ``other``, so no
client can grow the set of labels without bound."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class Metrics:
    """Counters and histograms in the Prometheus text format."""

    requests: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    latency: dict[str, list[int]] = field(default_factory=dict)
    latency_sum: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    batches: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    batch_sum: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(path, status)] += 1
            counts = self.latency.setdefault(path, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[_bucket(seconds, LATENCY_BUCKETS)] += 1
            self.latency_sum[path] += seconds

    def observe_batch(self, size: int) -> None:
        with self.lock:
            self.batches[_bucket(size, BATCH_BUCKETS)] += 1
            self.batch_sum += size

    def render(self) -> str:
        lines = ["# HELP mtst_requests_total Requests by path and status.", "# TYPE mtst_requests_total counter"]
        with self.lock:
            for (path, status), n in sorted(self.requests.items()):
                lines.append(f'mtst_requests_total{{path="{path}",status="{status}"}} {n}')
            lines += ["# HELP mtst_request_seconds Request latency.", "# TYPE mtst_request_seconds histogram"]
            for path, counts in sorted(self.latency.items()):
                lines += _histogram("mtst_request_seconds", counts, LATENCY_BUCKETS, self.latency_sum[path], path)
            lines += ["# HELP mtst_batch_texts Texts per forward pass.", "# TYPE mtst_batch_texts histogram"]
            lines += _histogram("mtst_batch_texts", self.batches, BATCH_BUCKETS, self.batch_sum, None)
        return "\n".join(lines) + "\n"


def _bucket(value: float, bounds: Sequence[float]) -> int:
    return next((i for i, b in enumerate(bounds) if value <= b), len(bounds))


def _histogram(name: str, counts: list[int], bounds: Sequence[float], total: float, path: str | None) -> list[str]:
    label = f'path="{path}",' if path else ""
    out, running = [], 0
    for bound, n in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        running += n
        out.append(f'{name}_bucket{{{label}le="{bound}"}} {running}')
    tail = f"{{{label.rstrip(',')}}}" if path else ""
    return [*out, f"{name}_sum{tail} {total}", f"{name}_count{tail} {running}"]

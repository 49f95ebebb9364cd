"""The server's settings: limits and batching of ``mtst serve``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    """Limits and batching of ``mtst serve`` (each has a CLI option, whose default is this one)."""

    max_texts: int = 64
    max_chars: int = 5000
    max_body_bytes: int = 2 * 2**20
    max_concurrency: int = 64
    timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    batch_wait_ms: float = 5.0
    max_batch: int = 64
    workers: int = 1
    max_padding: float = 0.2
    precision: str = "fp32"  # inference precision: fp32, bf16 or auto (SentenceEncoder.set_inference_precision)
    packing: bool = True  # texts of a batch packed end to end (SentenceEncoder.set_packing; torch models)
    api_key: str | None = None

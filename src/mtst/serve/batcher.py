"""Micro-batching: the texts of concurrent requests go through one forward pass together.

Each request's texts join a queue, and one worker runs a single forward pass over everything that
arrived within ``batch_wait_ms`` (up to ``max_batch`` texts), so throughput under load approaches
offline encoding; one request's bad texts fail that request alone.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from mtst.config import ServeSettings
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.predictions import Outputs
from mtst.serve.metrics import Metrics


class MicroBatcher:
    """Joins the texts of concurrent requests into one forward pass on a single worker thread."""

    def __init__(self, model: MultiTaskModel, settings: ServeSettings, metrics: Metrics) -> None:
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] | None = None
        self.task: asyncio.Task | None = None
        # One thread runs every forward pass: the model and its tokenizer are never used concurrently.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mtst-batch")

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str]) -> Outputs:
        """Embeddings and class probabilities of ``texts``, computed in a shared batch."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        assert self.queue is not None
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            deadline = loop.time() + self.settings.batch_wait_ms / 1000
            while size < self.settings.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                items.append(item)
                size += len(item[0])
            items = [(texts, fut) for texts, fut in items if not fut.cancelled()]
            if not items:
                continue
            texts = [t for chunk, _ in items for t in chunk]
            self.metrics.observe_batch(len(texts))
            try:
                result = await loop.run_in_executor(self.executor, self._infer, texts)
            except Exception as exc:
                # One request's texts must not fail its neighbours': run each request alone, so that
                # only the one that breaks the forward pass gets the error. The worker keeps going.
                if len(items) == 1:
                    _settle(items[0][1], exc=exc)
                    continue
                for chunk, fut in items:
                    try:
                        _settle(fut, await loop.run_in_executor(self.executor, self._infer, chunk))
                    except Exception as single:
                        _settle(fut, exc=single)
                continue
            start = 0
            for chunk, fut in items:
                _settle(fut, result.rows(start, start + len(chunk)))
                start += len(chunk)

    @torch.inference_mode()
    def _infer(self, texts: list[str]) -> Outputs:
        """Every single-text task of the model (and the embeddings) in one forward pass."""
        model = self.model
        return model.outputs(texts, model.text_tasks, self.settings.max_batch, self.settings.max_padding)


def _settle(future: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Give a waiting request its result or error (unless it already gave up)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)

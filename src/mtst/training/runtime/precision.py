"""A run's precision, kept per run rather than in Accelerate's process-wide state.

Accelerate keeps one mixed-precision setting per process and refuses another later, and it offers
no public way to reset it; a sweep or a notebook runs several trainings in one process, each at its
own ``training.precision``. So Accelerate is asked for mixed precision only where it must manage a
gradient scaler (fp16 on CUDA), and bf16 autocast is entered here through ``torch.autocast``, which
is what Accelerate itself would enter.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from mtst.errors import MtstError


class RunAccelerator:
    """An ``accelerate.Accelerator`` with this run's precision: ``mixed_precision`` and ``autocast()``
    answer for the run; everything else (device, processes, backward, gathering) is Accelerate's."""

    def __init__(self, accelerator: Any, mixed_precision: str) -> None:
        self.accelerator = accelerator
        self.mixed_precision = mixed_precision  # Accelerate's names: "no", "bf16", "fp16"

    def autocast(self) -> AbstractContextManager:
        if self.mixed_precision == "bf16":
            return torch.autocast(device_type=self.accelerator.device.type, dtype=torch.bfloat16)
        return self.accelerator.autocast()  # fp16 (with Accelerate's scaler) or a no-op

    def __getattr__(self, name: str) -> Any:
        return getattr(self.accelerator, name)


def make_accelerator(mixed_precision: str, cuda: bool) -> RunAccelerator:
    """An accelerator for one run at ``mixed_precision`` (Accelerate's name, resolved for the device)."""
    from accelerate import Accelerator

    managed = "fp16" if mixed_precision == "fp16" else "no"
    try:
        accelerator = Accelerator(mixed_precision=managed, cpu=not cuda)
    except ValueError as exc:  # fp16 after another precision (or the reverse) in one process
        raise MtstError(
            f"training.precision: this process already trained with Accelerate at another precision, and "
            f"Accelerate keeps one per process; run the fp16 training in a process of its own ({exc})"
        ) from exc
    return RunAccelerator(accelerator, mixed_precision)

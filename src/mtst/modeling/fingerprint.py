"""One weight fingerprint: a cheap checksum that tells whether weights are the ones expected.

Used where weights are read back from somewhere else: a checkpoint's frozen
weights rebuilt from the backbone, LoRA adapters loaded onto their base
model, and the key of a cache of frozen work.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def weight_fingerprint(tensors: Iterable[torch.Tensor], per_tensor: int | None = 256, absolute: bool = False) -> float:
    """Sum of (a strided sample of ``per_tensor`` values of) each tensor, in double precision, rounded.

    ``per_tensor=None`` sums every value; ``absolute`` sums magnitudes (a sum of signed
    values can stay put while the weights move).
    """
    total = 0.0
    for tensor in tensors:
        flat = tensor.detach().reshape(-1)
        if per_tensor is not None:
            flat = flat[:: max(1, flat.numel() // per_tensor)]
        flat = flat.double()
        total += float((flat.abs() if absolute else flat).sum())
    return round(total, 6)

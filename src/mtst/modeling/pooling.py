"""Pooling: token embeddings -> one sentence embedding.

Mean and max are mask-aware: padding positions never count, so a sentence's
embedding does not depend on what else was in its batch.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

PoolingMode = Literal["cls", "mean", "max"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)


def pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce ``(batch, seq, dim)`` token embeddings to ``(batch, dim)``."""
    if mode == "cls":
        return token_embeddings[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode == "mean":
        summed = (token_embeddings * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return summed / counts
    if mode == "max":
        # Padding is pushed to the lowest value so it can never win the max.
        filled = token_embeddings.masked_fill(mask == 0, torch.finfo(token_embeddings.dtype).min)
        return filled.max(dim=1).values
    raise ValueError(f"unknown pooling {mode!r}; allowed: {', '.join(POOLING_MODES)}")


def normalize(embeddings: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows so that a dot product is a cosine similarity."""
    return F.normalize(embeddings, p=2, dim=-1)

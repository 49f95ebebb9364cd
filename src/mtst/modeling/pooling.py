"""Pooling: token embeddings -> one sentence embedding.

Mean and max are mask-aware: padding positions never count, so a sentence's
embedding does not depend on what else was in its batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtst.config import POOLING_MODES


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


class Pooling(nn.Module):
    """The pooling step of the features pipeline (sentence-transformers' ``models.Pooling``, three modes).

    Adds ``sentence_embedding`` from ``token_embeddings`` and ``attention_mask``;
    :meth:`get_config_dict` is what a saved model records of it.
    """

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in POOLING_MODES:
            raise ValueError(f"unknown pooling {value!r}; allowed: {', '.join(POOLING_MODES)}")
        self._mode = value

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        features["sentence_embedding"] = pool(features["token_embeddings"], features["attention_mask"], self.mode)
        return features

    def get_config_dict(self) -> dict[str, Any]:
        return {"mode": self.mode}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Pooling:
        return cls(config["mode"])

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
